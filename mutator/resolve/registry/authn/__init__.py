"""Who is asking: the credentials a lookup may offer a registry, and where they come from.

``keyring`` matches registry keys to an image as the kubelet does,
``credentials`` chains the sources (the Pod's pull secrets, kubelet credential
``plugins``, a Docker config) for one Pod's pull, and parses Docker config
files. Kept apart from the transport and the client, as go-containerregistry
keeps ``authn`` apart from ``transport``: answering a challenge with a
credential is :mod:`mutator.resolve.registry.auth`'s job, sending the request
the transport's.

May import: the root modules, ``mutator.resolve.registry.reference`` and its
own modules; nothing that sends a request.
"""
