"""Sources: where events come from.

The source API (``api``), the reconnect policy (``backoff``), refused input
(``refused``: a dead letter and a counter for what a source cannot read), and the
built-in sources (``replay`` from files, ``webhook`` over HTTP).
"""
