"""Deciding: from an admission review and what each image runs as, to the answer. Pure.

``admission`` reads the AdmissionReview and writes the response, ``workloads``
finds the pod spec inside each workload kind, ``passwd`` reads passwd/group as
the node does, ``images`` is what the resolver tells the policy, ``policy``
decides (patch, warn or refuse), ``findings`` and ``feedback`` say per
container what was found and how to fix it, ``evidence`` writes the audit and
Pod annotations.

May import: the standard library, ``mutator.errors`` and its own modules. No
I/O (no network, no files, no clock beyond what callers pass in), so that
every rule here is tested as a plain function; nothing from ``resolve``,
``serve`` or ``commands``.
"""
