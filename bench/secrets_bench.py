"""What references to secrets cost per recorded call, and masking per log line.

Measures :class:`ccbus.config.secrets.SecretBook` with five configured
secrets: sealing a webhook call's parameters (as the dispatcher does when it
records the call) with and without a secret in them, resolving them again
(as it does when a retry is sent), and masking one log line.  No target:
the figures go to bench/README.md next to the outbox's own cost per call.

    .venv/bin/python bench/secrets_bench.py   # ~10 s
"""

from __future__ import annotations

import json
import timeit

from ccbus.config.secrets import SecretBook

ROUNDS = 20_000


def per_call(func: object) -> float:
    """Microseconds per call, best of five rounds (the least disturbed by other work)."""
    return min(timeit.repeat(func, number=ROUNDS, repeat=5)) / ROUNDS * 1e6  # type: ignore[arg-type]


def main() -> None:
    book = SecretBook({f"secret:s{i}": f"secret-value-{i}-XYZ/é" for i in range(5)})
    carrying = json.dumps(
        {"url": "https://crm.example/hook/secret-value-3-XYZ/é",
         "headers": {"Authorization": "Bearer secret-value-1-XYZ/é"},
         "json": {"caller": "12345", "queue": "sales"}},
        ensure_ascii=False,
    )
    plain = json.dumps({"url": "https://crm.example/hook/abc", "headers": {"X": "y"},
                        "json": {"caller": "12345", "queue": "sales"}})
    sealed, refs = book.seal_json(carrying)
    empty = SecretBook()  # the dispatcher does not even call it then
    line = ("12:00:01 WARNING ccbus.delivery: rule forward: webhook attempt 1 failed: HTTP 503 "
            "from http://127.0.0.1:9/hook (Service Unavailable), body 'down for maintenance'; "
            "retrying in 0.2s")
    rows = [
        ("seal a call carrying 2 secrets", per_call(lambda: book.seal_json(carrying))),
        ("seal a call carrying none", per_call(lambda: book.seal_json(plain))),
        ("unseal the call carrying 2", per_call(lambda: book.unseal_json(sealed, refs))),
        ("mask a 190-character log line", per_call(lambda: book.redact(line))),
        ("no secrets configured: seal", per_call(lambda: empty.seal_json(plain))),
    ]
    for name, micros in rows:
        print(f"{name:34s} {micros:8.1f} µs")


if __name__ == "__main__":
    main()
