"""nonroot-mutator: lets images that declare USER by name run under runAsNonRoot.

The kubelet cannot verify that a named user (``USER node``) is non-root, so it
refuses such containers. This webhook reads the image's own ``/etc/passwd`` and
patches the numeric uid in at admission.
"""

__version__ = "0.1.0"
