"""Delivery of action calls: a durable outbox, retries with backoff, dead letters.

Every action call the rules make goes through here (built-in or plugin):

1. :class:`~ccbus.delivery.store.SqliteDeliveryStore` records it in the outbox
   (SQLite, WAL) *before* it runs; the source's event is acknowledged after that.
2. :class:`~ccbus.delivery.dispatcher.Dispatcher` runs it in its target's lane
   (a per-target concurrency limit, so a slow target never holds up others),
   removes it on success, reschedules it with jittered exponential backoff on a
   retryable failure (honouring ``Retry-After``), and moves it to the dead
   letters on a permanent one or when attempts or age run out.

A crash loses nothing: whatever was recorded and not yet removed runs again
on the next start (at least once; receivers deduplicate by the
``Idempotency-Key`` the calls carry).
"""
