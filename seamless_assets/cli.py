"""`seamless`: the operator's command line.

seamless nodes                                   list the catalog
seamless backfill NODE --start D --end D         materialize partitions through Dagster
                 [--refetch-gaps] [--refetch]    retry ledgered gaps / restated bars
seamless coverage NODE [--start D --end D]       stored coverage, known gaps, segments
seamless verify                                  check every segment, head, snapshot, file
seamless snapshot [NODE ...]                     commit the published set if it changed
seamless snapshots NODE                          a node's snapshot log
seamless diff NODE AS_OF_A AS_OF_B               the bars that differ between two snapshots
seamless doctor                                  is every configured service reachable?
seamless pools                                   store each exchange pool's limit in Dagster
seamless demo                                    offline demo against the replay exchange
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from .config import SeamlessConfig, load_config
from .core.coverage import coverage_ratio
from .core.frame import Range, iso_utc
from .core.snapshot import DIFF_KINDS, Snapshot
from .errors import SeamlessError
from .event_nodes import AnyNode, EventNodeId
from .nodes import NodeId
from .process import end_process, startup_heap


def parse_instant(text: str) -> datetime:
    """`YYYY-MM-DD` or an ISO-8601 datetime, as UTC."""
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise SeamlessError(
            f"{text!r} is not a date; use YYYY-MM-DD or an ISO-8601 time such as "
            "2024-01-31T12:00:00Z"
        ) from None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def ensure_dagster_home(config: SeamlessConfig) -> Path:
    """Use $DAGSTER_HOME, else the project's `dagster_home/` next to the config file."""
    home = os.environ.get("DAGSTER_HOME")
    if not home:
        base = Path(config.source).resolve().parent if config.source else Path.cwd()
        home = str(base / "dagster_home")
        os.environ["DAGSTER_HOME"] = home
    Path(home).mkdir(parents=True, exist_ok=True)
    return Path(home)


def plan_backfill(
    config: SeamlessConfig, nodes: Sequence[AnyNode], start: datetime, end: datetime
) -> tuple[str, list[str]]:
    """(job name, partition keys) of one single-run backfill of `nodes` over [start, end)."""
    from .partitions import partition_keys_for, timeframe_class_name, timeframe_classes

    class_names = {  # event nodes are day-partitioned, in the intraday job
        "intraday" if isinstance(n, EventNodeId) else timeframe_class_name(n.timeframe)
        for n in nodes
    }
    if len(class_names) != 1:
        raise SeamlessError(
            "one backfill run takes nodes of one partitioning: days (bars ≤1h, funding, "
            "trades) or months (bars >1h); run them apart"
        )
    tf_class = timeframe_classes(config.seamless.partitions)[class_names.pop()]
    keys = partition_keys_for(tf_class.partitions_def, start, end)
    if not keys:
        raise SeamlessError(
            f"no closed partition of {', '.join(map(str, nodes))} overlaps "
            f"[{start:%Y-%m-%d %H:%M}, {end:%Y-%m-%d %H:%M}); partitions start at the configured "
            "history start and end at the last closed one"
        )
    return tf_class.job_name, keys


def backfill_run_config(
    defs: Any, nodes: Sequence[AnyNode], refetch_gaps: bool, refetch_stored: bool
) -> dict[str, Any]:
    """The run config of a backfill of `nodes`: each asset op's options, INFO logs."""
    import dagster as dg

    ops: dict[str, Any] = {}
    for node in nodes:
        op = defs.resolve_assets_def(dg.AssetKey(node.asset_key_path())).node_def.name
        options: dict[str, bool] = (
            {"refetch": refetch_stored}
            if isinstance(node, EventNodeId)
            else {"refetch_gaps": refetch_gaps, "refetch_stored": refetch_stored}
        )
        ops[op] = {"config": options}
    return {"ops": ops, "loggers": {"console": {"config": {"log_level": "INFO"}}}}


def inline_check_keys(config: SeamlessConfig, nodes: Sequence[AnyNode]) -> set[Any]:
    """The keys of the inline checks of `nodes` (a run evaluates them itself)."""
    import dagster as dg

    from .checks import check_specs
    from .event_assets import event_check_specs

    threshold = config.seamless.observability.coverage_ratio_threshold
    keys = set()
    for node in nodes:
        key = dg.AssetKey(node.asset_key_path())
        specs = (
            event_check_specs(key, node, threshold)
            if isinstance(node, EventNodeId)
            else check_specs(key)
        )
        keys |= {spec.key for spec in specs}
    return keys


@dataclass(frozen=True)
class PreparedBackfill:
    """A backfill run ready to execute: its job (the nodes and their inline checks), run
    config, instance and tags."""

    job: Any
    run_config: dict[str, Any]
    instance: Any
    tags: dict[str, str]
    location: str  # the code location the run belongs to (`dagster.code_location`)

    def execute(self) -> Any:
        """Execute the run in this process as a run of the code location; its result (a
        Dagster `ExecutionResult`)."""
        from .attached_run import execute_attached

        return execute_attached(self.job, self.run_config, self.instance, self.tags, self.location)


def prepare_backfill(
    config: SeamlessConfig,
    nodes: Sequence[AnyNode],
    start: datetime,
    end: datetime,
    refetch_gaps: bool = False,
    refetch_stored: bool = False,
) -> PreparedBackfill:
    """Everything `run_backfill` does before the run starts: check the stores, plan the
    partitions, build the definitions, open the instance and release dead runs' slots."""
    import dagster as dg

    from .dead_runs import HOST_TAG, PID_TAG, free_slots_of_ended_runs, release_dead_runs
    from .definitions import build_definitions
    from .runtime import check_services, service_report
    from .submit import RANGE_END_TAG, RANGE_START_TAG

    ensure_dagster_home(config)
    # The stores a run cannot do without fail it here, with how to start them; a Redis
    # outage only degrades it to the in-process limiter (a budget per process).
    report = service_report(config)
    check_services(config, redis=False, report=report)
    for service, _, problem in report:
        if service == "Redis" and problem:
            print(
                f"warning: {problem}: this run uses the in-process rate limiter (a budget of "
                "its own, not shared with other workers); `seamless doctor` checks services",
                file=sys.stderr,
            )
    # One planned event per asset for a single-run backfill instead of one per partition
    # (Dagster's documented switch): a year of daily partitions otherwise costs ~5 s of
    # event-log writes before the run starts.
    os.environ.setdefault("DAGSTER_EMIT_PARTITION_SUBSET_IN_PLANNED_EVENTS", "1")
    # The partitions' materialization events go to the event log as one batch (up to this
    # many), which `dagster_storage.SeamlessSqliteEventLogStorage` writes in one transaction
    # per shard; Dagster's stock storages store a batch event by event, as without it.
    os.environ.setdefault("DAGSTER_EVENT_BATCH_SIZE", "1000")
    job_name, keys = plan_backfill(config, nodes, start, end)
    defs = build_definitions(config)
    asset_keys = [dg.AssetKey(n.asset_key_path()) for n in nodes]
    # The nodes and their inline checks only: governance checks run on their own schedule
    # (Dagster would otherwise run every check of a selected asset after it).
    inline_checks = inline_check_keys(config, nodes)
    job = defs.resolve_job_def(job_name).get_subset(
        asset_selection=set(asset_keys), asset_check_selection=inline_checks
    )
    run_config = backfill_run_config(defs, nodes, refetch_gaps, refetch_stored)
    instance = dg.DagsterInstance.get()
    for dead in release_dead_runs(instance):
        print(
            f"released run {dead.run_id}: its {dead.how} died before it finished", file=sys.stderr
        )
    for run_id in free_slots_of_ended_runs(instance):
        print(f"freed the pool slots still held by ended run {run_id}", file=sys.stderr)
    tags = {
        RANGE_START_TAG: keys[0],
        RANGE_END_TAG: keys[-1],
        PID_TAG: str(os.getpid()),
        HOST_TAG: socket.gethostname(),
    }
    return PreparedBackfill(job, run_config, instance, tags, config.dagster.code_location)


def run_backfill(
    config: SeamlessConfig,
    nodes: Sequence[AnyNode],
    start: datetime,
    end: datetime,
    refetch_gaps: bool = False,
    refetch_stored: bool = False,
) -> Any:
    """Materialize the partitions of `nodes` overlapping `[start, end)` as one Dagster run.

    The nodes must share a timeframe class (one partitions definition and job).
    """
    return prepare_backfill(config, nodes, start, end, refetch_gaps, refetch_stored).execute()


def _print_run(result: Any) -> int:
    for event in result.get_asset_observation_events():
        # the run's totals per node (seamless_assets/materialization.py); each partition's
        # own facts are on its materialization
        key = event.asset_key.to_user_string() if event.asset_key else ""
        metadata = {
            k: v.value for k, v in event.asset_observation_data.asset_observation.metadata.items()
        }
        print(
            f"  {key}: {metadata.get('bars_stored')} bars in {metadata.get('run_partitions')} "
            f"partition(s), {metadata.get('segments_published')} segments "
            f"({metadata.get('segments_written')} new), "
            f"{metadata.get('exchange_requests')} exchange requests"
        )
    for check in result.get_asset_check_evaluations():
        status = "passed" if check.passed else f"FAILED ({check.severity.value})"
        print(f"  check {check.asset_key.to_user_string()} {check.check_name}: {status}")
    print(f"run {result.run_id}: {'success' if result.success else 'FAILURE'}")
    if not result.success:
        for event in result.all_events:
            if event.is_step_failure and event.step_failure_data.error:
                print(
                    f"{event.step_key}: {root_cause(event.step_failure_data.error)}",
                    file=sys.stderr,
                )
    return 0 if result.success else 1


def root_cause(error: Any) -> str:
    """The actionable message of a Dagster serializable error: the innermost project error
    (its message names the service and how to fix it), else the innermost error. A
    library error a project error wraps (`raise StoreError(...) from exc`) is only detail."""
    from . import errors

    project = {
        name
        for name, value in vars(errors).items()
        if isinstance(value, type) and issubclass(value, errors.SeamlessError)
    }
    chosen = None
    while error.cause is not None:
        if error.cls_name in project:
            chosen = error
        error = error.cause
    if error.cls_name in project or chosen is None:
        chosen = error
    return str(chosen.message).strip()


def cmd_backfill(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    nodes = [config.catalog_node(n) for n in args.node]
    if args.queue:
        from .submit import submit_backfill

        return submit_backfill(
            config,
            nodes,
            parse_instant(args.start),
            parse_instant(args.end),
            webserver=args.webserver or config.seamless.observability.alerts.ui_base_url,
            location=args.location,
            wait=args.wait,
            refetch_gaps=args.refetch_gaps,
            refetch_stored=args.refetch,
        )
    # The program collects no garbage while it starts (imports, definitions, instance),
    # then freezes what start-up built (`process.startup_heap`).
    with startup_heap() if args.program else nullcontext():
        prepared = prepare_backfill(
            config,
            nodes,
            parse_instant(args.start),
            parse_instant(args.end),
            refetch_gaps=args.refetch_gaps,
            refetch_stored=args.refetch,
        )
    return _print_run(prepared.execute())


def cmd_coverage(args: argparse.Namespace) -> int:
    from .history import history_start_s
    from .runtime import resources_from_config

    config = load_config(args.config)
    if EventNodeId.is_event_id(args.node):
        from .event_cli import print_event_coverage

        start = int(parse_instant(args.start).timestamp()) if args.start else None
        end = int(parse_instant(args.end).timestamp()) if args.end else None
        return print_event_coverage(config, config.event_node(args.node), start, end)
    node = config.node(args.node)
    resources = resources_from_config(config)
    hot = resources["hot_store"].open()  # type: ignore[attr-defined]
    artifacts = resources["artifacts"].open()  # type: ignore[attr-defined]
    try:
        bounds = hot.bounds(str(node))
        if bounds is None:
            print(f"{node}: no bars stored")
            return 0
        first = int(parse_instant(args.start).timestamp()) if args.start else bounds[0]
        last = int(parse_instant(args.end).timestamp()) if args.end else bounds[1] + node.interval_s
        window = Range(first, last)
        covered = hot.coverage(str(node), node.interval_s, window)
        gaps = hot.ledger_gaps(str(node), window)
    finally:
        hot.close()
    ratio = coverage_ratio(covered, window, node.interval_s, origin_s=node.timeframe.origin_s)
    print(f"{node} {window}: coverage {ratio:.6f} ({len(covered)} contiguous range(s))")
    for r in covered[:20]:
        print(f"  stored  {r}")
    for gap in gaps:
        print(f"  gap     {gap.range} reason={gap.reason}")
    heads = artifacts.heads(node)
    inside = [w for w in heads if w.start < window.end and w.end > window.start]
    print(f"  segments published: {len(inside)} under {artifacts.node_uri(node)}")
    start = history_start_s(artifacts, node)
    print(f"  history starts: {iso_utc(start) if start is not None else 'not discovered yet'}")
    snapshot = artifacts.latest_snapshot(node)
    if snapshot is None:
        print("  as_of: no snapshot yet (`seamless snapshot` or the as_of sensor makes one)")
    else:
        print(f"  as_of: {_describe(snapshot)}")
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    artifacts = _open_artifacts(load_config(args.config))
    problems = artifacts.verify_all()
    for problem in problems:
        print(f"{problem.kind:<22} {problem.uri}\n{'':<22} {problem.detail}")
    print(f"verify: {len(problems)} problem(s)")
    return 1 if problems else 0


def _open_artifacts(config: SeamlessConfig, events: bool = False) -> Any:
    """The artifact store; with `events`, its view of the event nodes."""
    from .runtime import resources_from_config

    store = resources_from_config(config)["artifacts"]
    return store.open_events() if events else store.open()  # type: ignore[attr-defined]


def advance_snapshots(config: SeamlessConfig, nodes: Sequence[NodeId]) -> list[Snapshot | None]:
    """Advance each node's snapshot to what is stable now, as the as_of sensor does on its
    ticks; each node's latest snapshot, or None when nothing is stable yet."""
    import time

    from sensors.as_of import advance_to_now

    artifacts, now = _open_artifacts(config), time.time()
    return [advance_to_now(artifacts, node, config, now) for node in nodes]


def _describe(snapshot: Snapshot) -> str:
    missing = ", ".join(str(r) for r in snapshot.missing[:5])
    more = f" and {len(snapshot.missing) - 5} more" if len(snapshot.missing) > 5 else ""
    return (
        f"{snapshot.as_of_iso} {snapshot.fingerprint} "
        f"({len(snapshot.segments)} segments, {snapshot.row_count} bars, data to "
        f"{snapshot.watermark_iso}"
        + (f"; missing {missing}{more}" if missing else "; no missing partitions")
        + ")"
    )


def cmd_snapshot(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    nodes = [config.node(n) for n in args.node] if args.node else list(config.nodes)
    for node, snapshot in zip(nodes, advance_snapshots(config, nodes), strict=True):
        if snapshot is None:
            print(f"{node}: nothing stable yet")
        else:
            print(f"{node}: as_of {_describe(snapshot)}")
    return 0


def cmd_snapshots(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    node = config.catalog_node(args.node)
    artifacts = _open_artifacts(config, events=isinstance(node, EventNodeId))
    log = artifacts.snapshot_log(node)
    for entry in log:
        published = datetime.fromtimestamp(entry.published_at_s, tz=UTC)
        snapshot = artifacts.read_snapshot(node, entry)
        print(
            f"as_of {iso_utc(entry.as_of_s)}  {entry.fingerprint}  published {published:%c}  "
            f"data to {snapshot.watermark_iso}  {len(snapshot.segments)} segments  "
            f"{len(snapshot.missing)} missing window(s)"
        )
    print(f"{node}: {len(log)} snapshot(s)")
    return 0


def cmd_diff(args: argparse.Namespace) -> int:
    from .core.snapshot import diff_segments, parse_as_of

    config = load_config(args.config)
    node = config.node(args.node)
    artifacts = _open_artifacts(config)
    try:
        before, after = (artifacts.resolve_snapshot(node, parse_as_of(a)) for a in args.as_of)
    except ValueError as exc:
        raise SeamlessError(str(exc)) from exc
    print(f"{node}: {before.as_of_iso} {before.fingerprint}")
    print(f"{' ' * len(str(node))}  {after.as_of_iso} {after.fingerprint}")
    for change in diff_segments(before, after):
        print(f"  partition {change.range}: {change.before or '-'} -> {change.after or '-'}")
    bars = artifacts.diff_snapshots(node, before, after)
    counts = bars["change"].value_counts().to_dict()
    print(f"  bars: {len(bars)} differ " + str({k: counts.get(k, 0) for k in DIFF_KINDS}))
    if len(bars):
        shown = bars.head(args.limit).copy()
        shown.insert(0, "time", [iso_utc(int(t)) for t in shown["ts"]])
        print(shown.to_string(index=False))
        if len(bars) > args.limit:
            print(f"  … {len(bars) - args.limit} more (raise --limit)")
    return 0


def cmd_nodes(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    nodes: tuple[AnyNode, ...] = (*config.nodes, *config.event_nodes)
    for node in nodes:
        print(f"{node}  asset key {'/'.join(node.asset_key_path())}")
    return 0


def _check_instance(config: SeamlessConfig) -> int:
    """Print whether the Dagster instance's Postgres storage URL works; the problems."""
    from .instance_check import postgres_storage_problems

    home = os.environ.get("DAGSTER_HOME") or str(
        (Path(config.source).resolve().parent if config.source else Path.cwd()) / "dagster_home"
    )
    problems = postgres_storage_problems(Path(home) / "dagster.yaml")
    for problem in problems:
        print(f"Dagster  UNUSABLE — {problem}")
    return len(problems)


def cmd_doctor(args: argparse.Namespace) -> int:
    """One line per configured service: OK, or unreachable and how to fix it."""
    from .runtime import SERVICES_HINT, service_report

    config = load_config(args.config)
    print(f"config: {Path(config.source or '').resolve()}")
    report = service_report(config)
    for service, address, problem in report:
        print(
            f"{service:<8} {address}: "
            + (f"UNREACHABLE — {problem}; {SERVICES_HINT}" if problem else "OK")
        )
    if not report:
        print(
            "embedded defaults only (DuckDB, local directory, in-process limiter): nothing to check"
        )
    failed = sum(bool(problem) for _, _, problem in report)
    failed += _check_instance(config)
    if failed:
        print(
            f"doctor: {failed} problem(s) (runs fail on QuestDB/S3 and a bad Dagster storage "
            "URL; without Redis they use the in-process limiter)",
            file=sys.stderr,
        )
    return 1 if failed else 0


def cmd_pools(args: argparse.Namespace) -> int:
    """Store every exchange pool's limit (`exchanges.<id>.pool_limit`) in the instance of
    $DAGSTER_HOME and print them; run it before starting the code server."""
    import dagster as dg

    from .pools import apply_pool_limits, configured_pool_limits

    config = load_config(args.config)
    home = ensure_dagster_home(config)
    if not (home / "dagster.yaml").is_file():
        raise SeamlessError(
            f"DAGSTER_HOME={str(home)!r} has no dagster.yaml; point DAGSTER_HOME at the "
            "instance the code server and daemon use (e.g. dagster_home/ or deploy/)"
        )
    with dg.DagsterInstance.get() as instance:
        changes = apply_pool_limits(instance, configured_pool_limits(config))
    for change in changes:
        print(change.describe())
    print(f"pools: {sum(c.changed for c in changes)} of {len(changes)} limit(s) written")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    return run_demo(days=args.days)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="seamless", description=__doc__.splitlines()[0])
    parser.add_argument("--config", help="path to seamless.yaml (default: $SEAMLESS_CONFIG)")
    parser.set_defaults(program=False)  # `main` sets it when it runs as the program
    sub = parser.add_subparsers(dest="command", required=True)

    backfill = sub.add_parser("backfill", help="materialize partitions through Dagster")
    backfill.add_argument("node", nargs="+", help="node id(s), e.g. ohlcv:binance:BTC/USDT:1m")
    backfill.add_argument("--start", required=True, help="YYYY-MM-DD or ISO time (inclusive)")
    backfill.add_argument("--end", required=True, help="YYYY-MM-DD or ISO time (exclusive)")
    backfill.add_argument(
        "--refetch-gaps", action="store_true", help="retry windows the gap ledger marks empty"
    )
    backfill.add_argument(
        "--refetch",
        action="store_true",
        help="download stored bars again too (picks up candles the exchange restated)",
    )
    backfill.add_argument(
        "--queue",
        action="store_true",
        help="submit the run to the instance's run queue through the Dagster webserver "
        "(attached to its code location; the daemon launches it within the exchange pools) "
        "instead of running it in this process",
    )
    backfill.add_argument(
        "--webserver",
        help="with --queue: the webserver's URL (default: observability.alerts.ui_base_url)",
    )
    backfill.add_argument(
        "--location", help="with --queue: code location name (default: the one holding the job)"
    )
    backfill.add_argument(
        "--wait", action="store_true", help="with --queue: wait for the run to end"
    )
    backfill.set_defaults(func=cmd_backfill)

    coverage = sub.add_parser("coverage", help="stored coverage, known gaps and segments")
    coverage.add_argument("node")
    coverage.add_argument("--start")
    coverage.add_argument("--end")
    coverage.set_defaults(func=cmd_coverage)

    sub.add_parser("verify", help="check every segment, head, snapshot and file").set_defaults(
        func=cmd_verify
    )
    sub.add_parser("nodes", help="list the catalog").set_defaults(func=cmd_nodes)
    snapshot = sub.add_parser("snapshot", help="commit the published set if it changed")
    snapshot.add_argument("node", nargs="*", help="node id(s); default: every node")
    snapshot.set_defaults(func=cmd_snapshot)
    snapshots = sub.add_parser("snapshots", help="a node's snapshot log")
    snapshots.add_argument("node")
    snapshots.set_defaults(func=cmd_snapshots)
    diff = sub.add_parser("diff", help="the bars that differ between two snapshots")
    diff.add_argument("node")
    diff.add_argument("as_of", nargs=2, help="two as_of values (ISO-8601 or epoch seconds)")
    diff.add_argument("--limit", type=int, default=50, help="bars to print (default 50)")
    diff.set_defaults(func=cmd_diff)
    sub.add_parser(
        "doctor", help="check that every configured service (QuestDB, S3, Redis) is reachable"
    ).set_defaults(func=cmd_doctor)
    sub.add_parser(
        "pools", help="store each exchange pool's limit (exchanges.<id>.pool_limit) in Dagster"
    ).set_defaults(func=cmd_pools)
    demo = sub.add_parser("demo", help="offline demo: replay exchange + Dagster backfill")
    demo.add_argument("--days", type=int, default=7)
    demo.set_defaults(func=cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; its exit code. Without `argv` this is the `seamless` program (its
    console script): it tunes its garbage collection and ends the process itself
    (`process.end_process`) instead of returning."""
    args = build_parser().parse_args(argv)
    args.program = argv is None
    try:
        code = int(args.func(args))
    except SeamlessError as exc:
        print(f"error: {type(exc).__name__}: {exc}", file=sys.stderr)
        code = 2
    if args.program:
        end_process(code)
    return code


if __name__ == "__main__":
    sys.exit(main())
