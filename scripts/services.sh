#!/usr/bin/env bash
# Real production services on loopback, without Docker:
#   QuestDB (pinned Maven Central jar, run with the Java it needs), Redis (Debian), an S3
#   endpoint (moto server from PyPI), Postgres (Debian; the Dagster instance of deploy/),
#   Prometheus and its Pushgateway (Debian; the metrics of README "Metrics").
#   Each is installed if missing, started, waited for until healthy, and its address
#   printed. Process ids live in .services/<name>.pid (SEAMLESS_SERVICES_DIR moves the
#   state directory, e.g. to run a second set on other ports).
#
#   scripts/services.sh start [questdb|redis|s3|postgres|prometheus|pushgateway|all]
#   scripts/services.sh stop  [questdb|redis|s3|postgres|prometheus|pushgateway|all]
#   scripts/services.sh status
#
# Ports: QDB_HTTP_PORT QDB_PG_PORT QDB_ILP_PORT REDIS_PORT S3_PORT PG_PORT PROM_PORT
# PUSHGATEWAY_PORT (READER_METRICS_PORT: the reader /metrics Prometheus scrapes). Postgres gets a
# user and database `dagster` (password PG_PASSWORD, default `dagster`: local use only).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
source scripts/lib.sh
STATE=${SEAMLESS_SERVICES_DIR:-$ROOT/.services}
QUESTDB_VERSION=${QUESTDB_VERSION:-9.3.2}   # 9.3.x runs on Java 17; 9.4+ needs Java 25
QDB_HTTP=${QDB_HTTP_PORT:-9000}
QDB_PG=${QDB_PG_PORT:-8812}
QDB_ILP=${QDB_ILP_PORT:-9009}
REDIS_PORT=${REDIS_PORT:-6379}
S3_PORT=${S3_PORT:-5000}
PG_PORT=${PG_PORT:-5432}
PG_USER=${PG_USER:-dagster}
PG_PASSWORD=${PG_PASSWORD:-dagster}   # local default only; set your own anywhere else
PG_DB=${PG_DB:-dagster}
PROM_PORT=${PROM_PORT:-9090}
PUSHGATEWAY_PORT=${PUSHGATEWAY_PORT:-9091}
READER_METRICS_PORT=${READER_METRICS_PORT:-9464}
ALL_SERVICES="questdb redis s3 postgres prometheus pushgateway"
mkdir -p "$STATE"
STATE=$(cd "$STATE" && pwd)

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

pg_bindir() {  # Debian keeps the server binaries in /usr/lib/postgresql/<ver>/bin
  local dir
  dir=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
  if [[ -z $dir && -x $(command -v pg_ctl || true) ]]; then dir=$(dirname "$(command -v pg_ctl)"); fi
  echo "$dir"
}

# Postgres refuses to run as root: as root the cluster belongs to the `postgres` user.
pg_owner() { if ((EUID == 0)); then echo postgres; else id -un; fi; }
as_pg_owner() {
  if ((EUID == 0)); then runuser -u postgres -- "$@"; else "$@"; fi
}

start_postgres() {
  running postgres && { log "postgres already running"; return; }
  local bin; bin=$(pg_bindir)
  if [[ -z $bin || ! -x $bin/initdb ]]; then
    log "installing postgresql from Debian"
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql) >&2
    bin=$(pg_bindir)
  fi
  if ((EUID == 0)) && ! id postgres >/dev/null 2>&1; then
    useradd --system --home-dir /var/lib/postgresql --shell /bin/bash postgres
  fi
  local data=$STATE/postgres owner; owner=$(pg_owner)
  if [[ ! -f $data/PG_VERSION ]]; then
    mkdir -p "$data"; chown "$owner" "$data"; chmod 700 "$data"
    local pwfile; pwfile=$(mktemp); chmod 600 "$pwfile"; chown "$owner" "$pwfile"
    printf '%s\n' "$PG_PASSWORD" >"$pwfile"
    # Superuser `postgres` over the cluster's own socket (trust: only the owner can reach
    # it, the directory is 0700); TCP on loopback needs a password.
    as_pg_owner "$bin/initdb" -D "$data" -U postgres --auth-local=trust \
      --auth-host=scram-sha-256 --encoding=UTF8 --no-locale >"$STATE/postgres.log" 2>&1 \
      || { rm -f "$pwfile"; tail -n 20 "$STATE/postgres.log" >&2; return 1; }
    rm -f "$pwfile"
  fi
  touch "$STATE/postgres.log"; chown "$owner" "$STATE/postgres.log"
  as_pg_owner "$bin/pg_ctl" -D "$data" -l "$STATE/postgres.log" -w -t 60 \
    -o "-p $PG_PORT -k $data -c listen_addresses=127.0.0.1" start >/dev/null
  head -n 1 "$data/postmaster.pid" >"$STATE/postgres.pid"
  wait_until 60 postgres "$bin/pg_isready" -q -h 127.0.0.1 -p "$PG_PORT"
  local psql=("$bin/psql" -X -q -v ON_ERROR_STOP=1 -h "$data" -p "$PG_PORT" -U postgres)
  # Role and database for Dagster; CREATEDB lets tests make a fresh database each.
  as_pg_owner "${psql[@]}" -d postgres -v user="$PG_USER" -v pw="$PG_PASSWORD" >&2 <<'SQL'
SELECT format('CREATE ROLE %I LOGIN CREATEDB', :'user')
 WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = :'user') \gexec
SELECT format('ALTER ROLE %I PASSWORD %L', :'user', :'pw') \gexec
SQL
  as_pg_owner "${psql[@]}" -d postgres -v user="$PG_USER" -v db="$PG_DB" >&2 <<'SQL'
SELECT format('CREATE DATABASE %I OWNER %I', :'db', :'user')
 WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = :'db') \gexec
SQL
  log "postgres $("$bin/postgres" --version | awk '{print $3}'): postgresql://$PG_USER:***@127.0.0.1:$PG_PORT/$PG_DB"
}

debian_install() {  # debian_install BINARY PACKAGE
  command -v "$1" >/dev/null && return
  log "installing $2 from Debian"
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$2") >&2
}

start_pushgateway() {
  running pushgateway && { log "pushgateway already running"; return; }
  debian_install prometheus-pushgateway prometheus-pushgateway
  mkdir -p "$STATE/pushgateway"
  nohup prometheus-pushgateway --web.listen-address="127.0.0.1:$PUSHGATEWAY_PORT" \
    --persistence.file="$STATE/pushgateway/metrics" >"$STATE/pushgateway.log" 2>&1 &
  echo $! >"$STATE/pushgateway.pid"
  wait_until 30 pushgateway curl -sf "http://127.0.0.1:$PUSHGATEWAY_PORT/-/ready"
  log "pushgateway: http://127.0.0.1:$PUSHGATEWAY_PORT"
}

start_prometheus() {
  running prometheus && { log "prometheus already running"; return; }
  debian_install prometheus prometheus
  mkdir -p "$STATE/prometheus"
  # deploy/prometheus/prometheus.yml with this set's ports and the shipped alert rules
  sed -e "s#127.0.0.1:9091#127.0.0.1:$PUSHGATEWAY_PORT#; s#127.0.0.1:9464#127.0.0.1:$READER_METRICS_PORT#" \
      -e "s#alert_rules.yml#$ROOT/deploy/prometheus/alert_rules.yml#" \
      deploy/prometheus/prometheus.yml >"$STATE/prometheus/prometheus.yml"
  nohup prometheus --config.file="$STATE/prometheus/prometheus.yml" \
    --storage.tsdb.path="$STATE/prometheus/data" --web.listen-address="127.0.0.1:$PROM_PORT" \
    --web.enable-lifecycle >"$STATE/prometheus.log" 2>&1 &
  echo $! >"$STATE/prometheus.pid"
  wait_until 60 prometheus curl -sf "http://127.0.0.1:$PROM_PORT/-/ready"
  log "prometheus: http://127.0.0.1:$PROM_PORT (scrapes the pushgateway and 127.0.0.1:$READER_METRICS_PORT)"
}

stop_postgres() {
  local data=$STATE/postgres bin; bin=$(pg_bindir)
  if running postgres; then
    local pid; pid=$(cat "$STATE/postgres.pid")
    as_pg_owner "$bin/pg_ctl" -D "$data" -m fast -w -t 30 stop >/dev/null 2>&1 \
      || { kill "$pid" 2>/dev/null || true; }
    for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    log "postgres stopped (pid $pid)"
  fi
  rm -f "$STATE/postgres.pid"
}

stop_one() {
  local name=$1
  [[ $name == postgres ]] && { stop_postgres; return; }
  if running "$name"; then
    local pid; pid=$(cat "$STATE/$name.pid")
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
    log "$name stopped (pid $pid)"
  fi
  rm -f "$STATE/$name.pid"
}

targets() {
  case ${1:-all} in
    all) echo "$ALL_SERVICES" ;;
    questdb | redis | s3 | postgres | prometheus | pushgateway) echo "$1" ;;
    *) echo "unknown service '$1': one of $ALL_SERVICES, all" >&2; exit 2 ;;
  esac
}

case ${1:-} in
  start) for t in $(targets "${2:-all}"); do "start_$t"; done ;;
  stop) for t in $(targets "${2:-all}"); do stop_one "$t"; done ;;
  status) for t in $ALL_SERVICES; do
            if running "$t"; then echo "$t: running (pid $(cat "$STATE/$t.pid"))"; else echo "$t: stopped"; fi
          done ;;
  *) echo "usage: $0 start|stop [questdb|redis|s3|postgres|prometheus|pushgateway|all] | status" >&2; exit 2 ;;
esac
