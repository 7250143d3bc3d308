"""The peers as pytest fixtures, for every test suite that talks to ActiveMQ.

Registered through the ``pytest11`` entry point, so the STOMP, CVP and CUCM suites
(and a third party's) get ``activemq``, ``activemq_factory`` and ``jms_peer``
without each conftest writing them again.  Only pytest imports this module: the
peers themselves (:mod:`ccbus_peers.activemq`) stay importable without pytest.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractAsyncContextManager

import pytest

from ccbus_peers.activemq import (
    ActiveMQBroker,
    BrokerFactory,
    JmsPeer,
    open_jms_peer,
    require_activemq,
    shared_broker,
)

__all__ = ["activemq", "activemq_factory", "jms_peer"]


@pytest.fixture(scope="session")
def activemq(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ActiveMQBroker]:
    """The session's private ActiveMQ broker (stomp, stomp+ssl, OpenWire), shared by plugins."""
    require_activemq()
    with shared_broker(lambda: tmp_path_factory.mktemp("activemq")) as broker:
        yield broker


@pytest.fixture
def activemq_factory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerFactory]:
    """``activemq_factory(users=..., tls=...)``: a started private broker, for this test only."""
    require_activemq()
    with BrokerFactory(lambda: tmp_path_factory.mktemp("activemq-private")) as factory:
        yield factory


@pytest.fixture
def jms_peer() -> Callable[..., AbstractAsyncContextManager[JmsPeer]]:
    """``async with jms_peer(broker) as peer``: a Java JMS peer on ``broker``'s OpenWire port."""
    require_activemq()
    return open_jms_peer
