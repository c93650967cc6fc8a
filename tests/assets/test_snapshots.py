"""Snapshots end to end: Dagster backfills, a restatement, `seamless snapshot` and `diff`."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import numpy as np
import pytest

from resources.artifacts import ArtifactStore, LocalDirectoryBlobStore
from resources.reader import ComputeContext, SeamlessReader
from sandbox import SandboxConfig, SandboxExchange, expected_bars
from seamless_assets.cli import main, run_backfill
from seamless_assets.config import SeamlessConfig
from seamless_assets.core.fingerprint import fingerprint_dirname
from seamless_assets.core.frame import Range, iso_utc
from seamless_assets.core.snapshot import parse_as_of
from seamless_assets.errors import SeamlessError
from seamless_assets.nodes import NodeId

from .conftest import DAY
from .conftest import open_artifacts as _artifacts

START = datetime(2024, 1, 1, tzinfo=UTC)
T0 = int(START.timestamp())
NODE = "ohlcv:binance:BTC/USDT:1m"
# The exchange restates two hours of day 0 after the first snapshot.
RESTATED = {"BTC/USDT": [{"start": T0 + 3600, "end": T0 + 3 * 3600, "version": 1}]}


def _day(n: int) -> datetime:
    return datetime.fromtimestamp(T0 + n * DAY, tz=UTC)


def _committed_as_of(out: str) -> str:
    """The as_of `seamless snapshot` printed (`NODE: as_of <iso> <fingerprint> (...)`)."""
    return out.split(" as_of ", 1)[1].split()[0]


def test_a_restatement_is_a_new_snapshot_and_diff_lists_exactly_the_changed_bars(
    project: SeamlessConfig, sandbox: SandboxExchange, capsys: pytest.CaptureFixture[str]
) -> None:
    node = project.node(NODE)
    assert run_backfill(project, [node], START, _day(2)).success
    assert main(["--config", str(project.source), "coverage", NODE]) == 0
    assert "as_of: no snapshot yet" in capsys.readouterr().out
    assert main(["--config", str(project.source), "snapshot", NODE]) == 0
    out = capsys.readouterr().out
    first_as_of = _committed_as_of(out)
    # Everything since the exchange's first bar (2017) that was never materialized is missing.
    assert f"data to {iso_utc(T0 + 2 * DAY)}; missing [2023-01-01T00:00:00Z, {iso_utc(T0)})" in out
    assert main(["--config", str(project.source), "coverage", NODE]) == 0
    out = capsys.readouterr().out
    assert "coverage 1.000000" in out and f"as_of: {first_as_of}" in out and "2880 bars" in out
    # Nothing changed: `seamless snapshot` commits nothing new.
    assert main(["--config", str(project.source), "snapshot", NODE]) == 0
    assert _committed_as_of(capsys.readouterr().out) == first_as_of

    # The exchange restates two hours of day 0; no new partition closes.
    sandbox.configure(restatements=RESTATED)
    result = run_backfill(project, [node], START, _day(2), refetch_stored=True)
    assert result.success
    assert main(["--config", str(project.source), "snapshot", NODE]) == 0
    second_as_of = _committed_as_of(capsys.readouterr().out)
    assert parse_as_of(second_as_of) > parse_as_of(first_as_of)

    artifacts = _artifacts(project)
    first = artifacts.resolve_snapshot(node, parse_as_of(first_as_of))
    second = artifacts.resolve_snapshot(node, parse_as_of(second_as_of))
    assert first.watermark_s == second.watermark_s == T0 + 2 * DAY
    window = Range(T0, T0 + 2 * DAY)
    original = expected_bars("BTC/USDT", 60, T0, T0 + 2 * DAY)
    restated = expected_bars("BTC/USDT", 60, T0, T0 + 2 * DAY, SandboxConfig(restatements=RESTATED))
    old = artifacts.read_snapshot_range(node, first, window)
    new = artifacts.read_snapshot_range(node, second, window)
    for column in ("ts", "open", "high", "low", "close", "volume"):
        np.testing.assert_array_equal(old[column].to_numpy(), original[column])
        np.testing.assert_array_equal(new[column].to_numpy(), restated[column])

    changed = np.flatnonzero(
        np.any([original[c] != restated[c] for c in ("open", "high", "low", "close")], axis=0)
    )
    diff = artifacts.diff_snapshots(node, first, second)
    assert diff["ts"].tolist() == original["ts"][changed].tolist()
    assert set(diff["change"]) == {"changed"}
    assert len(changed) == 120  # the two restated hours, bar for bar

    assert main(["--config", str(project.source), "snapshots", NODE]) == 0
    log = capsys.readouterr().out.splitlines()
    assert [line.split()[1] for line in log[:-1]] == [first_as_of, second_as_of]
    assert all(
        f"data to {iso_utc(T0 + 2 * DAY)}  2 segments  1 missing" in line for line in log[:-1]
    )
    assert log[-1].endswith("2 snapshot(s)")

    assert main(["--config", str(project.source), "diff", NODE, first_as_of, second_as_of]) == 0
    out = capsys.readouterr().out
    assert f"bars: {len(diff)} differ {{'added': 0, 'removed': 0, 'changed': 120}}" in out
    assert iso_utc(T0 + 3600) in out and iso_utc(T0 + 3600 - 60) not in out


def test_diff_names_what_cannot_be_resolved(
    project: SeamlessConfig, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["--config", str(project.source), "diff", NODE, "2024-01-02", "not-a-time"])
    assert code == 2
    assert "SnapshotNotFound" in capsys.readouterr().err


def _tamper(artifacts: ArtifactStore, node: NodeId, kind: str) -> str:
    """Damage the store as the issue describes; the path verify must name."""
    blobs = artifacts.blobs
    assert isinstance(blobs, LocalDirectoryBlobStore)
    heads = artifacts.heads(node)
    day0, day1 = sorted(heads)[:2]
    prefix = artifacts.segment_prefix(node)
    if kind == "head_mismatch":  # day 1's head repointed to day 0's segment
        key = f"{prefix}/heads/{day1.start}-{day1.end}.json"
        blobs.put(key, json.dumps({"fingerprint": heads[day0]}).encode())
        return blobs.uri(key)
    manifest_key = f"{prefix}/segments/{fingerprint_dirname(heads[day1])}/manifest.json"
    if kind == "bad_snapshot":  # a manifest's row_count edited after the commit
        manifest = json.loads(blobs.get(manifest_key) or b"")
        manifest["row_count"] -= 1
        blobs.put(manifest_key, json.dumps(manifest, indent=2).encode())
        return blobs.uri(manifest_key)
    path = blobs.root / manifest_key
    if kind == "temp_file":  # a killed writer's leftover
        temp = path.parent / ".manifest.json.1@00000000.0a.tmp"
        temp.write_bytes(b"{")
        return temp.as_uri()
    path.chmod(0o600)  # kind == "permissions"
    return path.as_uri()


@pytest.mark.parametrize("kind", ["head_mismatch", "bad_snapshot", "temp_file", "permissions"])
def test_verify_reports_each_tampering_with_its_path(
    project: SeamlessConfig, capsys: pytest.CaptureFixture[str], kind: str
) -> None:
    node = project.node(NODE)
    assert run_backfill(project, [node], START, _day(3)).success
    assert main(["--config", str(project.source), "snapshot", NODE]) == 0
    assert main(["--config", str(project.source), "verify"]) == 0
    capsys.readouterr()
    artifacts = _artifacts(project)
    snapshot = artifacts.latest_snapshot(node)
    assert snapshot is not None
    uri = _tamper(artifacts, node, kind)
    assert main(["--config", str(project.source), "verify"]) == 1
    out = capsys.readouterr().out
    assert kind in out and uri in out
    if kind == "bad_snapshot":  # a backtest read of the snapshot is refused, naming the file
        path = uri.removeprefix("file://")
        with SeamlessReader.from_config(project.source) as reader:
            context = ComputeContext("w", "backtest", as_of=snapshot.as_of_s)
            with pytest.raises(SeamlessError) as raised:
                reader.fetch(NODE, T0, T0 + 3 * DAY, context)
        assert "not what its snapshot committed" in str(raised.value)
        assert path in str(raised.value) or uri in str(raised.value)
    if kind == "head_mismatch":  # the repointed head never enters a snapshot
        assert run_backfill(project, [node], _day(2), _day(3), refetch_stored=True).success
        assert main(["--config", str(project.source), "snapshot", NODE]) != 0
        assert "repointed" in capsys.readouterr().err
        assert artifacts.latest_snapshot(node) == snapshot
