"""The Dagster UI in a real browser (Debian's Chromium via Playwright) against a real
webserver, daemon and code server over three 1m nodes on the sandbox exchange:

a. the asset graph tells the three nodes apart (symbol and timeframe in each label);
b. a three-day backfill launched from the UI's Materialize dialog succeeds, and one
   partition's page shows exactly its own row count, fingerprint and manifest;
c. the run's page shows the run totals observation;
d. the coverage picture of the node with a planted exchange gap shows that gap.

A failing scenario saves a screenshot (path in the assertion message)."""

from __future__ import annotations

import re
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dagster as dg
import pytest

from .harness import UiStack, chromium_path, ui_stack, wait_for

pytestmark = [pytest.mark.timeout(420)]

T0 = 1_704_067_200  # 2024-01-01 00:00 UTC
DAY = 86_400
SYMBOLS = ("BTC/USDT", "ETH/USDT", "SOL/USDT")
GAP_SYMBOL = "SOL/USDT"  # no bars on 2024-01-02, nor 2024-01-01 20:00-22:00 (maintenance)
DAYS = ["2024-01-01", "2024-01-02", "2024-01-03"]
PARTITION = "2024-01-03"  # the partition whose page is inspected
SHOTS = Path(tempfile.gettempdir()) / "seamless_ui_screenshots"


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[UiStack]:
    gaps = {GAP_SYMBOL: [[T0 + 20 * 3600, T0 + 22 * 3600], [T0 + DAY, T0 + 2 * DAY]]}
    with ui_stack(tmp_path_factory.mktemp("ui"), SYMBOLS, {"gaps": gaps}) as ui:
        yield ui


@pytest.fixture(scope="module")
def browser(stack: UiStack) -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    executable = chromium_path()
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable)
        yield browser
        browser.close()


@pytest.fixture
def page(browser: Any, request: pytest.FixtureRequest) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1600, "height": 1100})
    page = context.new_page()
    page.set_default_timeout(30_000)
    yield page
    print(f"{request.node.name}: {shot(page, request.node.name)}")  # kept as test output
    context.close()


def shot(page: Any, name: str) -> str:
    SHOTS.mkdir(parents=True, exist_ok=True)
    path = SHOTS / f"{name}-{int(time.time())}.png"
    page.wait_for_timeout(500)  # let dialogs finish fading in
    page.screenshot(path=str(path), full_page=True)
    return f"screenshot {path}"


def dismiss_community_dialog(page: Any) -> None:
    skip = page.get_by_role("button", name="Skip")
    try:
        skip.wait_for(timeout=3000)
        skip.click()
    except Exception:
        pass


def modal(page: Any) -> Any:
    """The open modal dialog: Dagster's closed popovers also carry role=dialog."""
    return page.locator('[role="dialog"][aria-modal="true"]')


def body(page: Any) -> str:
    return str(page.inner_text("body"))


def wait_text(page: Any, text: str, timeout_ms: int = 30_000) -> None:
    page.get_by_text(text, exact=False).first.wait_for(timeout=timeout_ms)


def test_a_graph_tells_the_nodes_apart(stack: UiStack, page: Any) -> None:
    page.goto(f"{stack.base_url}/asset-groups/ohlcv_binance", wait_until="networkidle")
    dismiss_community_dialog(page)
    labels = [node.label for node in stack.nodes]
    try:
        for label in labels:
            wait_text(page, label)
        shown = [
            page.locator(f"text={label}").count() for label in labels
        ]  # in the graph and the sidebar list
    except Exception as exc:
        raise AssertionError(f"graph labels {labels} not shown: {exc}; {shot(page, 'a')}") from exc
    assert len(set(labels)) == len(labels)
    for node, label, count in zip(stack.nodes, labels, shown, strict=True):
        base, quote = node.symbol.split("/")
        assert base in label and quote in label and node.timeframe.code in label, label
        assert count >= 1, f"{label} not on the graph page; {shot(page, 'a')}"


def _materialization(stack: UiStack, node: Any, partition: str) -> dict[str, Any]:
    records = stack.instance.fetch_materializations(
        dg.AssetRecordsFilter(
            asset_key=dg.AssetKey(node.asset_key_path()), asset_partitions=[partition]
        ),
        limit=1,
    ).records
    assert records, f"no materialization of {node} {partition}"
    event = records[0].event_log_entry.asset_materialization
    assert event is not None
    return {k: v.value for k, v in event.metadata.items()}


@pytest.fixture(scope="module")
def backfill_run(stack: UiStack, browser: Any) -> dg.DagsterRun:
    """The three-day backfill of the gap node, launched from the Materialize dialog."""
    node = next(n for n in stack.nodes if n.symbol == GAP_SYMBOL)
    context = browser.new_context(viewport={"width": 1600, "height": 1100})
    page = context.new_page()
    page.set_default_timeout(30_000)
    try:
        page.goto(stack.asset_url(node), wait_until="networkidle")
        dismiss_community_dialog(page)
        page.get_by_role("button", name="Materialize…").first.click()
        dialog = modal(page)
        dialog.get_by_text("Show all partitions").click()  # the range is older than 90 days
        box = dialog.get_by_placeholder(re.compile("partition|Select", re.I)).first
        if not box.count():
            box = dialog.locator("input[type=text]").first
        box.fill(f"[{DAYS[0]}...{DAYS[-1]}]")
        box.press("Enter")
        wait_text(page, f"{len(DAYS)} partitions")
        dialog.get_by_role("button", name="Launch backfill").click()
        modal(page).wait_for(state="detached", timeout=30_000)
    except Exception as exc:
        raise AssertionError(
            f"launching from the UI failed: {exc}; {shot(page, 'b-launch')}"
        ) from exc
    finally:
        context.close()

    def finished() -> dg.DagsterRun | None:
        runs = [r for r in stack.runs() if r.tags.get("dagster/backfill")]
        done = [
            r
            for r in runs
            if r.status in (dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE)
        ]
        return done[0] if done else None

    run = wait_for("backfill run finished", finished, 150, stack)
    assert run.status == dg.DagsterRunStatus.SUCCESS, stack.procs.tails()
    backfill = run.tags["dagster/backfill"]
    runs = [r for r in stack.runs() if r.tags.get("dagster/backfill") == backfill]
    assert [r.run_id for r in runs] == [run.run_id], "a single-run backfill: one run"
    span = (run.tags["dagster/asset_partition_range_start"],)
    span += (run.tags["dagster/asset_partition_range_end"],)
    assert span == (DAYS[0], DAYS[-1]), run.tags
    return run


def test_b_a_partition_page_shows_its_own_count_fingerprint_and_manifest(
    stack: UiStack, page: Any, backfill_run: dg.DagsterRun
) -> None:
    node = next(n for n in stack.nodes if n.symbol == GAP_SYMBOL)
    own = _materialization(stack, node, PARTITION)
    others = [_materialization(stack, node, d) for d in DAYS if d != PARTITION]
    assert own["dagster/row_count"] == 1440
    page.goto(
        stack.asset_url(node, view="partitions", partition=PARTITION), wait_until="networkidle"
    )
    dismiss_community_dialog(page)
    try:
        wait_text(page, str(own["fingerprint"]))
    except Exception as exc:
        raise AssertionError(f"fingerprint not shown: {exc}; {shot(page, 'b')}") from exc
    text = body(page)
    assert re.search(r"\b1,?440\b", text), f"row count 1440 not shown; {shot(page, 'b')}"
    manifest = str(own["manifest_uri"])
    assert manifest in text, f"manifest {manifest} not shown; {shot(page, 'b')}"
    assert str(own["manifest_uri"]).endswith("/manifest.json")
    for other in others:  # only its own values
        if other.get("fingerprint"):
            assert str(other["fingerprint"]) not in text, (
                f"another partition's fingerprint; {shot(page, 'b')}"
            )
        if other.get("manifest_uri"):
            assert str(other["manifest_uri"]) not in text, f"another's manifest; {shot(page, 'b')}"


RUN_TOTALS = (
    "exchange_requests",
    "exchange_retries",
    "rate_limit_wait_s",
    "stage_fetch_s",
    "stage_total_s",
    "bars_stored",
)


def test_c_the_run_page_shows_its_totals(
    stack: UiStack, page: Any, backfill_run: dg.DagsterRun
) -> None:
    page.goto(f"{stack.base_url}/runs/{backfill_run.run_id}", wait_until="networkidle")
    dismiss_community_dialog(page)
    try:  # the event log is virtualised: show only the observations
        box = page.get_by_placeholder("Filter…")
        box.fill("type:ASSET_OBSERVATION")
        box.press("Enter")
        wait_text(page, "run_partitions")
        page.get_by_text("View full message").first.click()  # the row is clipped otherwise
        dialog = modal(page)
        dialog.get_by_text("stage_total_s").first.wait_for()
    except Exception as exc:
        raise AssertionError(f"no run totals on the run page: {exc}; {shot(page, 'c')}") from exc
    text = str(dialog.inner_text())
    missing = [name for name in RUN_TOTALS if name not in text]
    assert not missing, f"run totals {missing} not shown; {shot(page, 'c')}"


def test_d_the_coverage_picture_shows_the_planted_gap(
    stack: UiStack, page: Any, backfill_run: dg.DagsterRun
) -> None:
    node = next(n for n in stack.nodes if n.symbol == GAP_SYMBOL)
    key = dg.AssetKey(node.asset_key_path())

    def picture() -> str | None:
        for record in stack.instance.fetch_observations(key, limit=20).records:
            obs = record.event_log_entry.asset_observation
            if obs is not None and "coverage" in obs.metadata:
                text = str(obs.metadata["coverage"].value)
                if "2024-01-02: 1 confirmed empty" in text and "2024-01-01: 1 exchange gap" in text:
                    return text
        return None

    wait_for("coverage picture with the gap recorded by the sensor", picture, 120, stack)
    page.goto(stack.asset_url(node, view="events"), wait_until="networkidle")
    dismiss_community_dialog(page)
    try:
        wait_text(page, "2024-01-02: 1 confirmed empty")
    except Exception as exc:
        raise AssertionError(f"coverage picture not shown: {exc}; {shot(page, 'd')}") from exc
    text = body(page)
    assert "1 confirmed empty" in text and "○ confirmed empty" in text, shot(page, "d")
    assert "2024-01-01: 1 exchange gap" in text and "◐ exchange gap" in text, shot(page, "d")
