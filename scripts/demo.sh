#!/usr/bin/env bash
# Fresh machine → offline demo: installs uv and the locked Python dependencies, then
# starts the bundled replay exchange and backfills 7 days × 2 symbols of 1m through Dagster.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh
ensure_uv
sync_env
exec uv run seamless demo "$@"
