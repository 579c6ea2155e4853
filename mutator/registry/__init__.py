"""An OCI distribution client, just big enough to find an image's user.

``reference`` parses names, ``auth`` answers registry challenges, ``client``
fetches manifests and blobs (verifying digests), and ``rootfs`` scans layers for
``/etc/passwd`` and ``/etc/group``. They are kept apart so that transport,
credentials and naming can each change without touching the others.
"""
