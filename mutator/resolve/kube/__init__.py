"""Reading the cluster: a client for the API server and informer-style caches of what admissions need.

The webhook (and ``mutator report``, through its own client) reads exactly two
kinds of object here, both for registry credentials: Secrets of the two Docker
config types, and ServiceAccounts (for their ``imagePullSecrets``). Nothing here
writes to the cluster.
"""
