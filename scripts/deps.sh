#!/usr/bin/env bash
# Installs what pgrules' demo, tests and benchmarks need and the machine
# lacks. Idempotent: each step checks first and does nothing when the thing
# is already there. Usage: scripts/deps.sh [demo|test|bench]
set -euo pipefail
what=${1:-test}
cd "$(dirname "$0")/.."

as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else
    echo "deps: need root to run: $*" >&2; exit 1; fi
}

updated=
apt_install() {
  if [ -z "$updated" ]; then as_root apt-get update -qq; updated=1; fi
  echo "deps: installing $*"
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

have_initdb() {
  [ -n "${PGRULES_PG_BIN:-}" ] && [ -x "$PGRULES_PG_BIN/initdb" ] && return 0
  command -v pg_config >/dev/null && [ -x "$(pg_config --bindir)/initdb" ] && return 0
  compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null
}

command -v go >/dev/null || { echo "deps: Go is required (https://go.dev/dl/)" >&2; exit 1; }
# pg_query_go (PostgreSQL's parser) is C code built with cgo.
command -v gcc >/dev/null || apt_install gcc libc6-dev
have_initdb || apt_install postgresql
command -v psql >/dev/null || apt_install postgresql-client
if [ "$(id -u)" = 0 ] && ! id postgres >/dev/null 2>&1; then
  apt_install postgresql   # creates the postgres system user the server runs as
fi

case "$what" in
test|bench)
  compgen -G "/usr/lib/postgresql/*/bin/pgbench" >/dev/null || command -v pgbench >/dev/null || apt_install postgresql-contrib
  ;;
esac

if [ "$what" = test ]; then
  /usr/bin/python3 -c 'import psycopg2' 2>/dev/null || apt_install python3 python3-psycopg2
  command -v node >/dev/null && command -v npm >/dev/null || apt_install nodejs npm
  if [ -f tests/clients/node/package.json ] && [ ! -d tests/clients/node/node_modules/pg ]; then
    echo "deps: npm ci (node-postgres)"
    (cd tests/clients/node && npm ci --no-audit --no-fund --silent)
  fi
fi

if [ "$what" = bench ]; then
  command -v pgbouncer >/dev/null || [ -x /usr/sbin/pgbouncer ] || apt_install pgbouncer
fi
exit 0
