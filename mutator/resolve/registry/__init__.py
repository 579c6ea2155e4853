"""An OCI distribution client, just big enough to find an image's user.

``reference`` parses names; ``authn/`` says which credentials a lookup may offer
(``keyring``, ``credentials``, ``plugins``, Docker config files); ``auth``
answers registry challenges with them, ``transport`` decides where a request
goes (mirrors, TLS) and how long it may retry, ``platforms`` picks an index
entry as the node would, ``client`` fetches manifests and blobs (``content``:
descriptors, digest-verified streams; ``local`` serves the same from an OCI
layout or a ``docker save`` archive on disk), and ``rootfs`` finds ``/etc/passwd`` and
``/etc/group``: ``tree`` walks the path as containerd does over the merged
layers, ``layerscan`` reads what one layer says about it, ``layercache`` keeps
that per layer digest. They are kept apart so that transport, credentials and
naming can each change without touching the others.

May import: the root modules except ``config`` (what it needs of the settings is
passed in, in the shapes of ``settings``) and its own modules; nothing from
``decide``, ``serve`` or ``commands``.
"""
