#!/usr/bin/env bash
# Runs the test suite from a fresh checkout: installs uv and the locked deps if needed, starts
# the real services the suite needs (QuestDB, Redis, S3 endpoint, Postgres, Pushgateway: see
# scripts/services.sh) when they are not already listening, and afterwards stops only the
# ones it started. Arguments go to pytest: `bash scripts/test.sh tests/deploy -x`.
#
#   SEAMLESS_TEST_SERVICES="redis postgres"   start only these ("" = none)
#   REDIS_PORT QDB_PG_PORT QDB_HTTP_PORT S3_PORT PG_PORT PUSHGATEWAY_PORT   where they listen
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh
ensure_uv
ensure_chromium
sync_env

export QDB_HTTP_PORT=${QDB_HTTP_PORT:-9000} QDB_PG_PORT=${QDB_PG_PORT:-8812}
export REDIS_PORT=${REDIS_PORT:-6379} S3_PORT=${S3_PORT:-5000} PG_PORT=${PG_PORT:-5432}
export PUSHGATEWAY_PORT=${PUSHGATEWAY_PORT:-9091}
SERVICES=${SEAMLESS_TEST_SERVICES-questdb redis s3 postgres pushgateway}

port_of() {
  case $1 in
    questdb) echo "$QDB_PG_PORT" ;;
    redis) echo "$REDIS_PORT" ;;
    s3) echo "$S3_PORT" ;;
    postgres) echo "$PG_PORT" ;;
    pushgateway) echo "$PUSHGATEWAY_PORT" ;;
    *) echo "unknown service '$1' in SEAMLESS_TEST_SERVICES" >&2; exit 2 ;;
  esac
}
listening() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

started=()
stop_started() {
  local name
  for name in "${started[@]}"; do bash scripts/services.sh stop "$name" || true; done
}
trap stop_started EXIT
for name in $SERVICES; do
  port=$(port_of "$name")
  if listening "$port"; then
    echo "[test] $name already listening on $port: using it, leaving it running" >&2
  elif grep -qx "$name: running.*" <<<"$(bash scripts/services.sh status)"; then
    # Ours would be a second one in the same state directory: refuse rather than later stop
    # the one that is running elsewhere.
    echo "[test] scripts/services.sh already runs $name, but not on port $port; stop it or" \
      "use its port, or set SEAMLESS_SERVICES_DIR for a second set" >&2
    exit 1
  else
    bash scripts/services.sh start "$name"
    started+=("$name")
  fi
done

status=0
uv run pytest -q "$@" || status=$?
exit "$status"
