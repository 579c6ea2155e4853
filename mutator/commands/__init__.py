"""The command line: ``mutator serve | review | resolve | report``.

``cli`` parses the arguments and says what went wrong in one line with a
documented exit code; ``review_command`` checks manifests (read by
``manifests``) or reviews offline through the admission pipeline; ``report``
resolves every Pod of a cluster and ``report_render`` prints it, with
``inventory`` collecting what it lists.

May import: anything in ``mutator``; nothing imports it but ``mutator.__main__``.
"""
