"""Rules: loading and compiling (``loader``), matching (``index``, ``engine``),
per-key state (``state``) and offline test cases (``testing``)."""
