"""Actions: what rules make happen.

The action API (``api``), shared outbound HTTP sessions (``http_sessions``), and
the built-in actions: ``log``, ``emit``, ``webhook`` and ``notify`` (apprise).
"""
