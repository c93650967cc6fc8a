#!/usr/bin/env bash
# Real production services on loopback, without Docker:
#   QuestDB (pinned Maven Central jar, run with the Java it needs), Redis (Debian), an S3
#   endpoint (moto server from PyPI). Each is installed if missing, started, waited for
#   until healthy, and its address printed. Process ids live in .services/<name>.pid.
#
#   scripts/services.sh start [questdb|redis|s3|all]
#   scripts/services.sh stop  [questdb|redis|s3|all]
#   scripts/services.sh status
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
source scripts/lib.sh
STATE=$ROOT/.services
QUESTDB_VERSION=${QUESTDB_VERSION:-9.3.2}   # 9.3.x runs on Java 17; 9.4+ needs Java 25
QDB_HTTP=${QDB_HTTP_PORT:-9000}
QDB_PG=${QDB_PG_PORT:-8812}
QDB_ILP=${QDB_ILP_PORT:-9009}
REDIS_PORT=${REDIS_PORT:-6379}
S3_PORT=${S3_PORT:-5000}
mkdir -p "$STATE"

log() { printf '[services] %s\n' "$*" >&2; }

wait_until() {  # wait_until SECONDS NAME CMD...
  local deadline=$((SECONDS + $1)) name=$2; shift 2
  until "$@" >/dev/null 2>&1; do
    if ((SECONDS > deadline)); then
      log "$name did not become healthy; last log lines:"; tail -n 20 "$STATE/$name.log" >&2 || true
      return 1
    fi
    sleep 0.3
  done
}

running() { [[ -f $STATE/$1.pid ]] && kill -0 "$(cat "$STATE/$1.pid")" 2>/dev/null; }

questdb_jar() {
  local jar=$HOME/.m2/repository/org/questdb/questdb/$QUESTDB_VERSION/questdb-$QUESTDB_VERSION.jar
  if [[ ! -f $jar ]]; then
    log "fetching org.questdb:questdb:$QUESTDB_VERSION from Maven Central"
    mvn -q dependency:get -Dartifact="org.questdb:questdb:$QUESTDB_VERSION" >&2
  fi
  echo "$jar"
}

start_questdb() {
  running questdb && { log "questdb already running"; return; }
  local jar; jar=$(questdb_jar)
  local java=${QUESTDB_JAVA:-java}
  mkdir -p "$STATE/questdb"
  QDB_HTTP_BIND_TO=127.0.0.1:$QDB_HTTP QDB_HTTP_MIN_ENABLED=false \
  QDB_PG_NET_BIND_TO=127.0.0.1:$QDB_PG QDB_LINE_TCP_NET_BIND_TO=127.0.0.1:$QDB_ILP \
  QDB_LINE_UDP_ENABLED=false QDB_TELEMETRY_ENABLED=false QDB_METRICS_ENABLED=false \
  QDB_SHARED_WORKER_COUNT=2 QDB_CAIRO_SQL_COPY_ROOT="$STATE/questdb/import" \
    nohup "$java" -Xms128m -Xmx768m -XX:+UseParallelGC -p "$jar" \
      -m io.questdb/io.questdb.ServerMain -d "$STATE/questdb" >"$STATE/questdb.log" 2>&1 &
  echo $! >"$STATE/questdb.pid"
  wait_until 90 questdb curl -sf "http://127.0.0.1:$QDB_HTTP/exec?query=select%201"
  log "questdb $QUESTDB_VERSION: http://127.0.0.1:$QDB_HTTP  pg 127.0.0.1:$QDB_PG  ilp http::addr=127.0.0.1:$QDB_HTTP"
}

start_redis() {
  running redis && { log "redis already running"; return; }
  if ! command -v redis-server >/dev/null; then
    log "installing redis-server from Debian"
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server) >&2
  fi
  nohup redis-server --bind 127.0.0.1 --port "$REDIS_PORT" --save '' --appendonly no \
    --daemonize no --maxmemory 128mb >"$STATE/redis.log" 2>&1 &
  echo $! >"$STATE/redis.pid"
  wait_until 30 redis redis-cli -p "$REDIS_PORT" ping
  log "redis: redis://127.0.0.1:$REDIS_PORT/0"
}

start_s3() {
  running s3 && { log "s3 already running"; return; }
  ensure_uv
  nohup uv run --frozen moto_server -H 127.0.0.1 -p "$S3_PORT" >"$STATE/s3.log" 2>&1 &
  echo $! >"$STATE/s3.pid"
  wait_until 60 s3 curl -sf "http://127.0.0.1:$S3_PORT/moto-api/"
  log "s3 (moto): http://127.0.0.1:$S3_PORT  (any access key/secret)"
}

stop_one() {
  local name=$1
  if running "$name"; then
    local pid; pid=$(cat "$STATE/$name.pid")
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
    log "$name stopped (pid $pid)"
  fi
  rm -f "$STATE/$name.pid"
}

targets() { if [[ ${1:-all} == all ]]; then echo questdb redis s3; else echo "$1"; fi; }

case ${1:-} in
  start) for t in $(targets "${2:-all}"); do "start_$t"; done ;;
  stop) for t in $(targets "${2:-all}"); do stop_one "$t"; done ;;
  status) for t in questdb redis s3; do
            if running "$t"; then echo "$t: running (pid $(cat "$STATE/$t.pid"))"; else echo "$t: stopped"; fi
          done ;;
  *) echo "usage: $0 start|stop [questdb|redis|s3|all] | status" >&2; exit 2 ;;
esac
