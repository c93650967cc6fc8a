"""The streamed run settles together the chunks fetched by the time its settling thread is
free (`pipeline._take_fetched`): never a chunk still being fetched, never past a failed
fetch (it raises in chunk order), and the queue's end is seen."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from seamless_assets.pipeline import _take_fetched


async def _tasks(kinds: str) -> list[asyncio.Task[Any]]:
    """One task per letter: d done, p pending, f failed."""

    async def fail() -> None:
        raise RuntimeError("fetch failed")

    def coroutine(kind: str) -> Any:
        if kind == "f":
            return fail()
        return asyncio.sleep(30 if kind == "p" else 0)

    out = [asyncio.ensure_future(coroutine(kind)) for kind in kinds]
    await asyncio.sleep(0.01)  # the done and failed ones finish
    return out


@pytest.mark.parametrize(
    ("first", "queued", "end", "taken", "ended"),
    [
        ("d", "dd", True, 3, True),  # all fetched, then the end: everything, ended
        ("d", "dd", False, 3, False),  # all fetched, more to come
        ("d", "dpd", True, 3, False),  # stops after the one being fetched
        ("d", "fd", True, 2, False),  # stops after a failed fetch
        ("p", "dd", True, 1, False),  # the first is still being fetched: nothing more
        ("d", "", True, 1, True),
    ],
)
def test_take_fetched(first: str, queued: str, end: bool, taken: int, ended: bool) -> None:
    async def scenario() -> None:
        tasks = await _tasks(first + queued)
        queue: asyncio.Queue[Any] = asyncio.Queue()
        for task in tasks[1:]:
            queue.put_nowait(task)
        if end:
            queue.put_nowait(None)
        fetches = tasks[:1]
        assert _take_fetched(queue, fetches) is ended
        assert fetches == tasks[:taken]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    asyncio.run(scenario())
