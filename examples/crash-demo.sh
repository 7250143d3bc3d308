#!/usr/bin/env bash
# The crash demonstration of docs/delivery.md: kill -9 with 50 calls pending,
# restart, and count what the receiver got. Run from the repository root after
# `make install`; it uses ports 8799 and 9099 and a temporary directory.
set -euo pipefail
CCBUS=${CCBUS:-.venv/bin/ccbus}
PY=${PY:-.venv/bin/python}
N=${N:-50}
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT

mkdir -p "$work/rules"
touch "$work/received.txt"
cat > "$work/ccbus.yaml" <<YAML
sources:
  in: {plugin: webhook, options: {token: demo-token-123}}
rules: [rules]
state_dir: state
http: {listen: "127.0.0.1:8799"}
delivery: {backoff_initial: 0.2, backoff_cap: 1s, attempts: 1000}
YAML
cat > "$work/rules/forward.yaml" <<'YAML'
rules:
  - name: forward
    on: crash.*
    do: [webhook: {url: "http://127.0.0.1:9099/in", json: {n: "{n}"}}]
YAML

echo "1. ccbus starts; the receiver on 127.0.0.1:9099 is down"
"$CCBUS" run -c "$work/ccbus.yaml" 2>"$work/first.log" & pid=$!
until curl -sf http://127.0.0.1:8799/health >/dev/null; do sleep 0.2; done

echo "2. $N events posted; each call is recorded and retried against the dead receiver"
for n in $(seq 1 "$N"); do
  curl -sf -H 'Authorization: Bearer demo-token-123' \
       -d "{\"type\":\"crash.Test\",\"id\":\"e$n\",\"data\":{\"n\":$n}}" \
       http://127.0.0.1:8799/events/in >/dev/null
done
sleep 1

echo "3. kill -9"
kill -9 "$pid"; wait "$pid" 2>/dev/null || true
pending=$("$PY" -c "import sqlite3,sys; print(sqlite3.connect(sys.argv[1]).execute('select count(*) from outbox').fetchone()[0])" "$work/state/delivery.sqlite3")
echo "   outbox after kill -9: $pending call(s) recorded"

echo "4. ccbus starts again (the receiver still down); 2 s later the receiver comes up"
"$CCBUS" run -c "$work/ccbus.yaml" 2>"$work/second.log" & pid=$!
until curl -sf http://127.0.0.1:8799/health >/dev/null; do sleep 0.2; done
sleep 2
"$PY" - "$work/received.txt" <<'PY' & rpid=$!
import sys
from http.server import BaseHTTPRequestHandler, HTTPServer

out = open(sys.argv[1], "a", buffering=1)

class Receiver(BaseHTTPRequestHandler):
    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        out.write(self.headers["Idempotency-Key"] + "\n")
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args):
        pass

HTTPServer(("127.0.0.1", 9099), Receiver).serve_forever()
PY
for _ in $(seq 1 100); do
  got=$(sort -u "$work/received.txt" 2>/dev/null | wc -l)
  [ "$got" -ge "$N" ] && break
  sleep 0.2
done
kill -TERM "$pid"; wait "$pid" 2>/dev/null || true
kill "$rpid" 2>/dev/null || true

got=$(sort -u "$work/received.txt" | wc -l)
echo "5. receiver got $got distinct idempotency keys of $N sent: lost $((N - got))"
[ "$got" -eq "$N" ]
