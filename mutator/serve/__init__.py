"""Serving: the HTTPS webhook, and everything that keeps it answering in time.

``pipeline`` is the one path an admission takes (memo, decode, resolve,
decide, evidence), ``memo`` the decisions kept for repeated Pods,
``workload_warnings`` the apply-time route, ``server`` the aiohttp app around
them; ``drain`` (graceful SIGTERM), ``loopstats`` (loop lag), ``tls``,
``certreload`` and ``dockerreload`` (files rotated in place) and ``warmup``
(the stored Pods' images, resolved at start) keep it running.

May import: the root modules, ``mutator.decide``, ``mutator.resolve`` and its
own modules; never ``commands``.
"""
