# Shared shell helpers for scripts/ (sourced, not executed).

# Install uv from PyPI when it is missing (the only bootstrap step; everything else is locked).
ensure_uv() {
  if ! command -v uv >/dev/null 2>&1; then
    python3 -m pip install --quiet --user uv 2>/dev/null || python3 -m pip install --quiet uv
    export PATH="$HOME/.local/bin:$PATH"
  fi
  command -v uv >/dev/null || { echo "uv could not be installed; install it with 'pip install uv'" >&2; exit 1; }
}

# Debian's Chromium for the browser tests (tests/ui; Playwright drives it, no browser download).
ensure_chromium() {
  if ! command -v chromium >/dev/null 2>&1; then
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium) >&2 \
      || echo "chromium could not be installed; 'apt-get install chromium' (tests/ui needs it)" >&2
  fi
}

# The locked environment, with bytecode compiled at install: the dependencies'
# (`--compile-bytecode`) and the project's own packages (installed editable, so uv leaves
# them to Python, which compiles them in every process when PYTHONDONTWRITEBYTECODE is set,
# as in many containers: ~0.3 s of each `seamless` run). Python still reads a stale .pyc
# only after checking it against its source, so editing the code stays safe.
sync_env() {
  uv sync --frozen --compile-bytecode --quiet
  uv run --frozen python -m compileall -q -j 0 seamless_assets resources sensors sandbox >/dev/null
}
