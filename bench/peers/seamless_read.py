"""Seamless side of the read rows, run by the project's venv in its own process.

    python bench/peers/seamless_read.py export CONFIG AS_OF OUT.parquet START END
    python bench/peers/seamless_read.py warm CONFIG AS_OF WINDOWS.json
    python bench/peers/seamless_read.py fresh CONFIG AS_OF START END
    python bench/peers/seamless_read.py fingerprint CONFIG AS_OF START END REPEAT

Reads go through the public `SeamlessReader` (backtest domain, pinned `as_of`). Windows
are `[start, end)` in epoch seconds. Prints one JSON object on stdout.
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
NODE = "ohlcv:binance:BTC/USDT:1m"


def _reader(config: str, as_of: str):  # type: ignore[no-untyped-def]
    from resources.reader import ComputeContext, SeamlessReader

    reader = SeamlessReader.from_config(config)
    ctx = ComputeContext(world_id="bench-peers", execution_domain="backtest", as_of=as_of)
    return reader, ctx


def export(config: str, as_of: str, out: str, start: int, end: int) -> dict:
    """The year's canonical frame as Parquet (the bars the other tools are given)."""
    reader, ctx = _reader(config, as_of)
    with reader:
        frame, meta = reader.fetch(NODE, start, end, ctx)
    frame.to_parquet(out, index=False)
    return {"rows": len(frame), "dataset_fingerprint": meta.dataset_fingerprint}


def warm(config: str, as_of: str, windows_path: str) -> dict:
    windows = json.loads(Path(windows_path).read_text())
    reader, ctx = _reader(config, as_of)
    ms, rows = [], []
    with reader:
        w0 = windows["warmup"]
        reader.fetch(NODE, w0[0], w0[1], ctx)  # the process is warm, this window unused
        for start, end in windows["reads"]:
            t = time.perf_counter()
            frame, meta = reader.fetch(NODE, start, end, ctx)
            ms.append((time.perf_counter() - t) * 1000)
            assert not meta.partial, meta.downgrade_reason
            rows.append(len(frame))
    return {"ms": ms, "median_ms": statistics.median(ms), "rows": rows}


def fresh(config: str, as_of: str, start: int, end: int) -> dict:
    """Imports, opening the reader and the first read, timed apart. Opening loads the config
    and the read layers' modules (pandas, pyarrow, ccxt) and opens the stores: imports and
    set-up, as `import pyarrow` is for pyarrow; the read is the first `fetch`."""
    t0 = time.perf_counter()
    from resources.reader import ComputeContext, SeamlessReader

    t1 = time.perf_counter()
    reader = SeamlessReader.from_config(config)
    ctx = ComputeContext(world_id="bench-peers", execution_domain="backtest", as_of=as_of)
    t2 = time.perf_counter()
    frame, meta = reader.fetch(NODE, start, end, ctx)
    t3 = time.perf_counter()
    reader.close()
    return {
        "import_ms": (t1 - t0) * 1000,
        "open_ms": (t2 - t1) * 1000,
        "read_ms": (t3 - t2) * 1000,
        "rows": len(frame),
        "segment_cache": getattr(meta, "segment_cache", None),
    }


def fingerprint(config: str, as_of: str, start: int, end: int, repeat: int) -> dict:
    """`dataset_fingerprint` of the year vs sha256 of the same canonical bytes, alternated."""
    import hashlib

    from seamless_assets.core.fingerprint import (
        FingerprintIdentity,
        canonical_column_bytes,
        dataset_fingerprint,
    )
    from seamless_assets.core.frame import CANONICAL_COLUMNS, Range

    reader, ctx = _reader(config, as_of)
    with reader:
        frame, meta = reader.fetch(NODE, start, end, ctx)
    identity = FingerprintIdentity(
        NODE, 60, Range(start, end), reader.config.seamless.conformance.version
    )
    payload = identity.header() + len(frame).to_bytes(8, "little")
    payload += b"".join(canonical_column_bytes(frame, c) for c in CANONICAL_COLUMNS)
    ours, raw = [], []
    for _ in range(repeat):
        t = time.perf_counter()
        digest = dataset_fingerprint(frame, identity)
        ours.append((time.perf_counter() - t) * 1000)
        t = time.perf_counter()
        hashlib.sha256(payload).hexdigest()
        raw.append((time.perf_counter() - t) * 1000)
    return {
        "fingerprint_ms": statistics.median(ours),
        "hashlib_ms": statistics.median(raw),
        "bytes": len(payload),
        "same_digest": digest == "sha256:" + hashlib.sha256(payload).hexdigest(),
        "matches_reader": digest == meta.dataset_fingerprint,
    }


def main(argv: list[str]) -> int:
    sys.path.insert(0, str(ROOT))
    mode, config, as_of, *rest = argv
    if mode == "export":
        out = export(config, as_of, rest[0], int(rest[1]), int(rest[2]))
    elif mode == "warm":
        out = warm(config, as_of, rest[0])
    elif mode == "fresh":
        out = fresh(config, as_of, int(rest[0]), int(rest[1]))
    elif mode == "fingerprint":
        out = fingerprint(config, as_of, int(rest[0]), int(rest[1]), int(rest[2]))
    else:
        raise SystemExit(f"unknown mode {mode!r}: export | warm | fresh | fingerprint")
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
