"""An OCI distribution client, just big enough to find an image's user.

``reference`` parses names, ``keyring`` says which credentials apply to an image,
``credentials`` chains where they come from (the Pod, ``plugins``, a Docker config),
``auth`` answers registry challenges with them, ``transport``
decides where a request goes (mirrors, TLS) and how long it may retry,
``platforms`` picks an index entry as the node would, ``client`` fetches
manifests and blobs (``content``: descriptors, digest-verified streams), and
``rootfs`` finds ``/etc/passwd`` and ``/etc/group``: ``tree`` walks the path as
containerd does over the merged layers, ``layerscan`` reads what one layer says
about it, ``layercache`` keeps that per layer digest. They are kept apart so
that transport, credentials and naming can each change without touching the others.
"""
