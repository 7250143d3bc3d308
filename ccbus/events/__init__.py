"""Events: the envelope every source produces, the canonical catalogue, and decoding.

The first stop of the data path: what a vendor sends becomes an :class:`Event`
here (``envelope``), with its timestamp parsed (``timestamps``), its JSON decoded
(``jsondecode``) and, for tests and replays, read from files (``files``).
"""
