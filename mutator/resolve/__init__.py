"""Resolving: from an image reference (and whose pull credentials) to the user it runs as.

``resolver`` answers image → uid/gid, cached (``cache``) and coalesced, with
lookups in flight shared across requesters (``sharing``) and every cached
answer screened by the Pod's own access (``access``); ``standalone`` gives one
command-line run a resolver of its own. ``registry`` is the OCI distribution
client, ``kube`` reads the cluster (pull secrets, service accounts).

May import: the root modules (``config``, ``errors``, ``metrics``, ``logs``,
``durations``), ``mutator.decide`` for its vocabulary (``images``, ``passwd``),
and its own modules; never ``serve`` or ``commands``.
"""
