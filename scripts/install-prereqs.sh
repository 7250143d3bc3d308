#!/usr/bin/env bash
# Installs what a fresh Debian/Ubuntu machine lacks for `make test`: the tests
# talk to real peers (ActiveMQ, a JMS peer, syslog, headless Chromium, Node's
# SignalR client, systemd-analyze), and they fail rather than skip without them.
# Installs only what is missing, so a second run changes nothing.
# Called by `make prereqs` and by .ci/run. Needs root for apt-get (uses sudo when
# not root).
set -euo pipefail
cd "$(dirname "$0")/.."

as_root() {
  if [ "$(id -u)" -eq 0 ]; then
    "$@"
  elif command -v sudo >/dev/null; then
    sudo "$@"
  else
    echo "install-prereqs: need root (or sudo) to run: $*" >&2
    exit 1
  fi
}

apt_install() {
  if ! command -v apt-get >/dev/null; then
    echo "install-prereqs: no apt-get here; install these Debian packages' equivalents: $*" >&2
    exit 1
  fi
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@"
}

need_apt=()
command -v make >/dev/null || need_apt+=(make)
python3 -c 'import venv, ensurepip' 2>/dev/null || need_apt+=(python3-venv)
command -v openssl >/dev/null || need_apt+=(openssl)   # ccbus-genesys TLS tests make their certs
# ccbus-stomp / ccbus-cisco-cvp / ccbus-cucm tests: a private ActiveMQ broker, a JMS
# peer compiled with javac, and real syslog datagrams from util-linux's logger.
[ -e /usr/share/activemq/bin/activemq.jar ] || need_apt+=(activemq)
command -v javac >/dev/null || need_apt+=(openjdk-17-jdk-headless)
command -v logger >/dev/null || need_apt+=(bsdutils)
# core service tests: the live view in headless Chromium; the unit file checked by
# systemd-analyze verify (tests/test_live_view.py, tests/test_service.py).
command -v chromium >/dev/null || need_apt+=(chromium)
command -v systemd-analyze >/dev/null || need_apt+=(systemd)
# groups (cluster: backend: postgres): a real PostgreSQL on 127.0.0.1:5432 that the
# tests reach as user postgres without a password (tests/postgres.py; CCBUS_TEST_PG
# names another server).
command -v psql >/dev/null || need_apt+=(postgresql)
if ((${#need_apt[@]})); then
  apt_install "${need_apt[@]}"
fi

# PostgreSQL: start it where it is installed but not running (CI's machine runs one).
if ! pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; then
  if command -v pg_ctlcluster >/dev/null && [ -n "$(ls /etc/postgresql 2>/dev/null)" ]; then
    version="$(ls /etc/postgresql | sort -V | tail -1)"
    as_root pg_ctlcluster "$version" main start || true
  fi
  if pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null \
      && ! psql -h 127.0.0.1 -U postgres -c 'select 1' >/dev/null 2>&1; then
    echo "install-prereqs: PostgreSQL runs but refuses user postgres over TCP without a" \
         "password; allow 'host all postgres 127.0.0.1/32 trust' in pg_hba.conf for the tests," \
         "or set CCBUS_TEST_PG to a DSN that works" >&2
  fi
fi

# --- ccbus-enreach: Microsoft's SignalR JavaScript client for the interop test -----
# plugins/ccbus-enreach/tests/test_js_client.py runs @microsoft/signalr (npm registry)
# with node against the RTE simulator.  Install node/npm if missing, and the client
# into the cache directory the test reads ($CCBUS_NPM_CACHE, default below), so the
# test itself needs no network.
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  apt_install nodejs npm
fi
export CCBUS_NPM_CACHE="${CCBUS_NPM_CACHE:-$HOME/.cache/ccbus/npm}"
if [ ! -f "$CCBUS_NPM_CACHE/node_modules/@microsoft/signalr/package.json" ]; then
  mkdir -p "$CCBUS_NPM_CACHE"
  npm install --prefix "$CCBUS_NPM_CACHE" --no-audit --no-fund '@microsoft/signalr@10'
fi
# --- end ccbus-enreach ----------------------------------------------------------------
