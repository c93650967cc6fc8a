"""The reader's segment cache: reads through it equal reads from the segments (bars,
fingerprints, flags) for any window; a corrupt cache file is detected, logged and rebuilt;
another process reuses the files; eviction keeps the size bound; a segment altered in the
store after a cached read is refused as without the cache. Real sandbox, pipeline, stores."""

from __future__ import annotations

import json
import logging
import random
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from resources import read_segment_cache
from resources.artifacts.base import DATA_FILE, decode_segment, encode_segment
from resources.read_segment_cache import CacheCounts, SegmentCache
from resources.read_segment_files import assemble
from resources.read_storage import StorageExecutor
from resources.reader import ComputeContext, frame_bytes
from sandbox import SandboxExchange
from seamless_assets.config import SeamlessConfig
from seamless_assets.core.fingerprint import fingerprint_dirname
from seamless_assets.core.frame import CANONICAL_COLUMNS, Range
from seamless_assets.errors import ArtifactIntegrityError

from .test_reader_support import (
    DAY,
    NODE,
    NODE_ID,
    T0,
    advance,
    artifacts_of,
    frozen_sandbox,
    materialize,
    project,
    reader_for,
)

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def sandbox() -> Iterator[SandboxExchange]:
    with frozen_sandbox() as exchange:
        yield exchange


def backtest(as_of: int) -> ComputeContext:
    return ComputeContext(world_id="w1", execution_domain="backtest", as_of=as_of)


def three_days(
    tmp_path: Path, sandbox: SandboxExchange, **segments: Any
) -> tuple[SeamlessConfig, int]:
    """Days 0-2 materialized and snapshotted; result cache off, segment cache as given."""
    cache = {"enable": False, "segments": {"enable": True, **segments}}
    config = project(tmp_path, sandbox, cache=cache)
    materialize(config, [0, 1, 2])
    return config, advance(config, T0 + 3 * DAY).as_of_s


def with_segments(config: SeamlessConfig, **segments: Any) -> SeamlessConfig:
    """`config` with other `cache.segments` settings."""
    changed = config.cache.segments.model_copy(update=segments)
    return config.model_copy(
        update={"cache": config.cache.model_copy(update={"segments": changed})}
    )


def cache_dir(config: SeamlessConfig) -> Path:
    return config.data_dir / "cache" / "segments"


def cache_files(config: SeamlessConfig) -> list[Path]:
    return sorted(cache_dir(config).glob("*.arrow"))


def windows(seed: int, count: int) -> list[Range]:
    """Random windows over days 0-2 and around them, with edges and empty windows."""
    rng = random.Random(seed)
    out = [
        Range(T0, T0 + 3 * DAY),  # everything
        Range(T0 + DAY, T0 + 2 * DAY),  # exactly one partition
        Range(T0 + DAY - 60, T0 + DAY + 60),  # across a partition edge
        Range(T0 + DAY, T0 + DAY),  # empty
        Range(T0 + 30, T0 + 59),  # inside one bar: no open time
        Range(T0 + 3 * DAY - 60, T0 + 3 * DAY),  # the last bar
    ]
    for _ in range(count):
        start = T0 + rng.randrange(0, 3 * DAY)
        out.append(Range(start, start + rng.randrange(0, 3 * DAY - (start - T0) + 1)))
    return out


def manifest_flags(artifacts: Any) -> Callable[[Sequence[str]], dict[str, dict[str, int]]]:
    """The conformance flags of each segment's manifest, as the reader passes them."""

    def flags(fingerprints: Sequence[str]) -> dict[str, dict[str, int]]:
        manifests = {fp: artifacts.read_manifest(NODE, fp) or {} for fp in fingerprints}
        return {fp: m["conformance"]["flags"] for fp, m in manifests.items()}

    return flags


def test_reads_through_the_cache_equal_reads_from_the_segments(
    tmp_path: Path, sandbox: SandboxExchange
) -> None:
    config, as_of = three_days(tmp_path, sandbox)
    artifacts = artifacts_of(config)
    snapshot = artifacts.resolve_snapshot(NODE, as_of)
    flags = manifest_flags(artifacts)

    built = SegmentCache(cache_dir(config), 2**30, artifacts)  # builds, then hits
    reopened = SegmentCache(cache_dir(config), 2**30, artifacts)  # a new process: opens
    for cache in (built, reopened):
        for window in windows(seed=7, count=25):
            expected = artifacts.read_snapshot_range(NODE, snapshot, window, verify=True)
            listed = snapshot.segments_overlapping(window)
            frame, _ = cache.read(NODE, snapshot, listed, window, CacheCounts(), flags)
            assert frame_bytes(frame) == frame_bytes(expected), window
            assert list(frame.dtypes) == list(expected.dtypes) and len(frame) == len(expected)
            assert all(frame[c].to_numpy().flags.writeable for c in frame.columns)
    assert len(cache_files(config)) == 3

    # Through the reader: the same bars, fingerprint and flags as with the cache off.
    off = with_segments(config, enable=False)
    with reader_for(config) as cached, reader_for(off) as plain:
        for window in windows(seed=8, count=8):
            if window.start == window.end:
                continue
            frame, meta = cached.fetch(NODE_ID, window.start, window.end, backtest(as_of))
            again, truth = plain.fetch(NODE_ID, window.start, window.end, backtest(as_of))
            assert frame_bytes(frame) == frame_bytes(again)
            assert meta.dataset_fingerprint == truth.dataset_fingerprint
            assert meta.conformance_flags == truth.conformance_flags
            assert meta.rows == truth.rows and meta.coverage_bounds == truth.coverage_bounds
            assert meta.segment_cache is not None and truth.segment_cache is None
            assert meta.segment_cache["built"] == 0  # every file was there already
        assert cached.metrics()["segment_cache_opened_total"] == 3


def test_files_opened_in_parallel_serve_the_same_bars(
    tmp_path: Path, sandbox: SandboxExchange, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A read that maps several files for the first time opens them on the pool: the same
    bars and counts as one by one, and a corrupt file among them is still rebuilt."""
    config, as_of = three_days(tmp_path, sandbox)
    artifacts = artifacts_of(config)
    snapshot = artifacts.resolve_snapshot(NODE, as_of)
    flags = manifest_flags(artifacts)

    whole = Range(T0, T0 + 3 * DAY)
    SegmentCache(cache_dir(config), 2**30, artifacts).read(
        NODE, snapshot, snapshot.segments, whole, CacheCounts(), flags
    )
    monkeypatch.setattr(read_segment_cache, "OPEN_MIN_PARALLEL", 2)
    monkeypatch.setattr(read_segment_cache, "CPUS", 2)
    pool = StorageExecutor(4, 4)
    try:
        for window in windows(seed=9, count=10):
            listed = snapshot.segments_overlapping(window)
            cache = SegmentCache(cache_dir(config), 2**30, artifacts, pool)  # a new process
            counts = CacheCounts()
            frame, opened = cache.read(NODE, snapshot, listed, window, counts, flags)
            expected = artifacts.read_snapshot_range(NODE, snapshot, window, verify=True)
            assert frame_bytes(frame) == frame_bytes(expected), window
            assert counts.as_dict() == {"hit": 0, "opened": len(listed), "built": 0, "rebuilt": 0}
            assert [s.fingerprint for s in opened] == [e.fingerprint for e in listed]
        _, middle, _ = cache_files(config)
        data = bytearray(middle.read_bytes())
        data[len(data) // 2] ^= 0x01
        middle.write_bytes(bytes(data))
        counts = CacheCounts()
        cache = SegmentCache(cache_dir(config), 2**30, artifacts, pool)
        frame, _ = cache.read(NODE, snapshot, snapshot.segments, whole, counts, flags)
        expected = artifacts.read_snapshot_range(NODE, snapshot, whole, verify=True)
        assert frame_bytes(frame) == frame_bytes(expected)
        assert counts.as_dict() == {"hit": 0, "opened": 2, "built": 1, "rebuilt": 1}
    finally:
        pool.shutdown()


def test_a_corrupt_cache_file_is_detected_logged_and_rebuilt(
    tmp_path: Path, sandbox: SandboxExchange, caplog: pytest.LogCaptureFixture
) -> None:
    config, as_of = three_days(tmp_path, sandbox)
    window = (T0, T0 + 3 * DAY)
    with reader_for(config) as reader:
        truth, first = reader.fetch(NODE_ID, *window, backtest(as_of))
    assert first.segment_cache == {"hit": 0, "opened": 0, "built": 3, "rebuilt": 0}
    originals = {p: p.read_bytes() for p in cache_files(config)}
    flipped, truncated, _ = cache_files(config)
    data = bytearray(flipped.read_bytes())
    data[len(data) // 2] ^= 0x01  # one bit
    flipped.write_bytes(bytes(data))
    truncated.write_bytes(truncated.read_bytes()[:-100])

    caplog.set_level(logging.WARNING, logger="resources.read_segment_cache")
    with reader_for(config) as reader:
        frame, meta = reader.fetch(NODE_ID, *window, backtest(as_of))
        assert frame_bytes(frame) == frame_bytes(truth)
        assert meta.dataset_fingerprint == first.dataset_fingerprint
        assert meta.segment_cache == {"hit": 0, "opened": 1, "built": 2, "rebuilt": 2}
        _, meta = reader.fetch(NODE_ID, T0 + 60, T0 + 3 * DAY, backtest(as_of))
        assert meta.segment_cache == {"hit": 3, "opened": 0, "built": 0, "rebuilt": 0}
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(str(flipped) in m and "corrupted or truncated" in m for m in warned), warned
    assert any(str(truncated) in m for m in warned), warned
    # Rebuilt: the same bytes under the same names (a file is named after its content).
    assert {p: p.read_bytes() for p in cache_files(config)} == originals


_CHILD = """
import json, sys
sys.path.insert(0, {root!r})
from resources.reader import ComputeContext, SeamlessReader
with SeamlessReader.from_config({config!r}) as reader:
    ctx = ComputeContext("w1", "backtest", as_of={as_of})
    frame, meta = reader.fetch({node!r}, {start}, {end}, ctx)
out = {{"cache": meta.segment_cache, "fp": meta.dataset_fingerprint, "rows": len(frame)}}
print(json.dumps(out))
"""


def test_another_process_reuses_the_cache(tmp_path: Path, sandbox: SandboxExchange) -> None:
    config, as_of = three_days(tmp_path, sandbox)
    window = (T0 + DAY // 2, T0 + 3 * DAY)
    with reader_for(config) as reader:
        _, meta = reader.fetch(NODE_ID, *window, backtest(as_of))
    script = _CHILD.format(
        root=str(ROOT), config=str(config.source), as_of=as_of, node=NODE_ID,
        start=window[0], end=window[1],
    )  # fmt: skip
    child = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT, timeout=120
    )
    assert child.returncode == 0, child.stderr[-2000:]
    result = json.loads(child.stdout.strip().splitlines()[-1])
    assert result["cache"] == {"hit": 0, "opened": 3, "built": 0, "rebuilt": 0}
    assert result["fp"] == meta.dataset_fingerprint and result["rows"] == meta.rows


@pytest.mark.parametrize("first_day", [0, 1, 2])
def test_a_snapshots_first_read_maps_all_its_cached_segments(
    tmp_path: Path, sandbox: SandboxExchange, first_day: int
) -> None:
    """`map_snapshot`: the first read of a pinned snapshot in a process opens every cached
    segment of it, so later windows open none; off, each read opens only its window's.
    Files that are missing are not built until a window needs them."""
    config, as_of = three_days(tmp_path, sandbox)
    whole = (T0, T0 + 3 * DAY)
    with reader_for(config) as reader:
        truth, _ = reader.fetch(NODE_ID, *whole, backtest(as_of))  # builds the three files
    day = (T0 + first_day * DAY, T0 + (first_day + 1) * DAY)
    other = (T0 + ((first_day + 1) % 3) * DAY + 600, T0 + ((first_day + 1) % 3) * DAY + 1200)
    with reader_for(config) as reader:
        _, meta = reader.fetch(NODE_ID, *day, backtest(as_of))
        assert meta.segment_cache == {"hit": 0, "opened": 3, "built": 0, "rebuilt": 0}
        frame, meta = reader.fetch(NODE_ID, *other, backtest(as_of))
        assert meta.segment_cache == {"hit": 1, "opened": 0, "built": 0, "rebuilt": 0}
        assert frame_bytes(frame) == frame_bytes(truth[truth.ts.between(other[0], other[1] - 1)])
    with reader_for(with_segments(config, map_snapshot=False)) as reader:
        _, meta = reader.fetch(NODE_ID, *day, backtest(as_of))
        assert meta.segment_cache == {"hit": 0, "opened": 1, "built": 0, "rebuilt": 0}
        _, meta = reader.fetch(NODE_ID, *other, backtest(as_of))
        assert meta.segment_cache == {"hit": 0, "opened": 1, "built": 0, "rebuilt": 0}
    listed = artifacts_of(config).resolve_snapshot(NODE, as_of).segments
    gone = (first_day + 2) % 3
    gone_prefix = fingerprint_dirname(listed[gone].fingerprint)
    next(p for p in cache_files(config) if p.name.startswith(gone_prefix)).unlink()
    with reader_for(config) as reader:
        _, meta = reader.fetch(NODE_ID, *day, backtest(as_of))
        assert meta.segment_cache == {"hit": 0, "opened": 2, "built": 0, "rebuilt": 0}
        assert len(cache_files(config)) == 2  # mapping the snapshot builds nothing
        span = (T0 + gone * DAY, T0 + (gone + 1) * DAY)
        frame, meta = reader.fetch(NODE_ID, *span, backtest(as_of))
        assert meta.segment_cache == {"hit": 0, "opened": 0, "built": 1, "rebuilt": 0}
        assert frame_bytes(frame) == frame_bytes(truth[truth.ts.between(span[0], span[1] - 1)])


def test_eviction_keeps_the_cache_under_max_bytes(tmp_path: Path, sandbox: SandboxExchange) -> None:
    config, as_of = three_days(tmp_path, sandbox)
    with reader_for(config) as reader:
        reader.fetch(NODE_ID, T0, T0 + 3 * DAY, backtest(as_of))
    size = max(p.stat().st_size for p in cache_files(config))
    listed = artifacts_of(config).resolve_snapshot(NODE, as_of).segments
    day_file = {
        day: next(
            p for p in cache_files(config) if p.name.startswith(fingerprint_dirname(s.fingerprint))
        )
        for day, s in enumerate(listed)
    }
    day_file[0].unlink()

    # Room for two files: days 1 and 2 are opened (in that order), day 0 is built, and the
    # build evicts the least recently opened file, day 1's. (Only windows' files are mapped.)
    roomy = with_segments(config, max_bytes=2 * size + size // 2, map_snapshot=False)
    with reader_for(roomy) as reader:
        for day in (1, 2, 0):
            time.sleep(0.05)  # distinct mtimes
            frame, _ = reader.fetch(NODE_ID, T0 + day * DAY, T0 + (day + 1) * DAY, backtest(as_of))
            assert len(frame) == 1440
    kept = {p.name.split(".")[0] for p in cache_files(config)}
    assert kept == {fingerprint_dirname(listed[i].fingerprint) for i in (2, 0)}

    # Room for none: every build is evicted at once, reads are still served.
    tiny = with_segments(config, max_bytes=1)
    with reader_for(tiny) as reader:
        frame, meta = reader.fetch(NODE_ID, T0, T0 + 3 * DAY, backtest(as_of))
        assert len(frame) == 3 * 1440 and meta.segment_cache is not None
        assert meta.segment_cache["built"] == 1 and cache_files(config) == []


def test_a_segment_altered_after_a_cached_read_is_refused(
    tmp_path: Path, sandbox: SandboxExchange
) -> None:
    """A tampered segment is refused whether or not it was cached before, in this
    process (mapped) and in a new one (file on disk)."""
    config, as_of = three_days(tmp_path, sandbox)
    snapshot = artifacts_of(config).resolve_snapshot(NODE, as_of)
    root = Path(config.artifact_uri.removeprefix("file://"))
    (folder,) = root.rglob(fingerprint_dirname(snapshot.segments[1].fingerprint))
    with reader_for(config) as reader:
        reader.fetch(NODE_ID, T0, T0 + 3 * DAY, backtest(as_of))  # all three cached
        frame = decode_segment((folder / DATA_FILE).read_bytes(), str(folder))
        frame.loc[100, "close"] += 1.0
        (folder / DATA_FILE).write_bytes(encode_segment(frame))
        with pytest.raises(ArtifactIntegrityError, match=folder.name):
            reader.fetch(NODE_ID, T0 + 60, T0 + 3 * DAY, backtest(as_of))
        _, meta = reader.fetch(NODE_ID, T0, T0 + DAY, backtest(as_of))  # day 0 is intact
        assert meta.segment_cache == {"hit": 1, "opened": 0, "built": 0, "rebuilt": 0}
    with reader_for(config) as reader, pytest.raises(ArtifactIntegrityError, match=folder.name):
        reader.fetch(NODE_ID, T0 + DAY, T0 + 2 * DAY, backtest(as_of))


def test_overlapping_segments_keep_the_later_segments_bar_per_ts() -> None:
    """As `SegmentStore._read_segments`: one bar per ts, the later listed segment's."""

    def bars(ts: list[int], close: float) -> dict[str, np.ndarray]:
        values = np.full(len(ts), close)
        columns = {c: values.copy() for c in CANONICAL_COLUMNS}
        columns["ts"] = np.array(ts, dtype=np.int64)
        return columns

    first, later = bars([0, 60, 120, 180], 1.0), bars([120, 180, 240], 2.0)
    frame = assemble([first, later], Range(60, 240))
    assert frame["ts"].tolist() == [60, 120, 180]
    assert frame["close"].tolist() == [1.0, 2.0, 2.0]
    assert len(assemble([first, later], Range(30, 59))) == 0
