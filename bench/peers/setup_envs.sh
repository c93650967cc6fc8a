#!/usr/bin/env bash
# Installs the peers of bench/bench_peers.py in their own environments under bench/.peers/
# (never the project's venv). Idempotent: an environment whose stamp matches is kept.
# Bytecode is compiled at install (this sandbox sets PYTHONDONTWRITEBYTECODE=1, and
# freqtrade's import would otherwise spend ~10 s compiling on every run).
set -euo pipefail
cd "$(dirname "$0")/../.."
PEERS=bench/.peers
PY=${PEERS_PYTHON:-3.11}
FREQTRADE_SPEC=${FREQTRADE_SPEC:-"freqtrade==2026.9"}
ARCTICDB_SPEC=${ARCTICDB_SPEC:-"arcticdb==6.28.2 pandas==2.3.3 pyarrow==26.0.1 psutil"}

ensure() {  # ensure <name> <specs...>
  local name=$1; shift
  local env=$PEERS/$name stamp="$PY $*"
  if [[ -x $env/bin/python && -f $env/.stamp && "$(cat "$env/.stamp")" == "$stamp" ]]; then
    return 0
  fi
  rm -rf "$env"
  uv venv --quiet "$env" --python "$PY"
  # shellcheck disable=SC2086  # the specs are words
  uv pip install --quiet --python "$env/bin/python" --compile-bytecode $*
  echo "$stamp" > "$env/.stamp"
}

mkdir -p "$PEERS"
ensure freqtrade $FREQTRADE_SPEC
ensure arcticdb $ARCTICDB_SPEC
