"""ccbus-peers: the real protocol peers ccbus's tests, benchmarks and simulators start.

Not a plugin, and not in any plugin's wheel: an admin who installs ccbus and
its plugins does not get these.  Tests get them through the plugins' ``[test]``
extras; ``ccbus simulate cvp --start-broker`` and ``ccbus simulate genesys``
without ``--bootstrap`` import them when run, and ask for
``pip install ccbus-peers`` when they are missing.

:mod:`ccbus_peers.activemq`
    A private ActiveMQ broker (Debian's ``activemq`` package) and a Java JMS
    1.1 peer (``JmsPeer.java``), for the STOMP family (``ccbus-stomp``,
    ``ccbus-cisco-cvp``, ``ccbus-cucm``).
:mod:`ccbus_peers.kafka`
    :class:`~ccbus_peers.kafka.KafkaTestBroker`, a minimal single-node Kafka
    wire-protocol broker: a TEST PEER, not Kafka (needs the ``kafka`` extra,
    i.e. aiokafka).  ``python -m ccbus_peers.kafka`` serves one.

Nothing in this package imports pytest at module level: the plugins'
``conftest.py`` files make fixtures of these.  This module imports neither
peer, so importing the package costs nothing.
"""

from __future__ import annotations

__all__: list[str] = []
