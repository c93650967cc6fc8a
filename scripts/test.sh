#!/usr/bin/env bash
# Runs the test suite from a fresh checkout: installs uv and the locked deps if needed.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh
ensure_uv
uv sync --frozen --compile-bytecode --quiet
exec uv run pytest -q "$@"
