"""Small HTTP helpers shared by the sandbox's admin routes."""

from __future__ import annotations

import json
from typing import Any, Protocol

from aiohttp import web


async def read_json_object(request: web.Request) -> dict[str, Any]:
    """The request's JSON object body ({} when empty); ValueError for anything else."""
    raw = await request.read()
    if not raw:
        return {}
    data = json.loads(raw)
    if not isinstance(data, dict):
        raise ValueError("request body must be a JSON object")
    return data


class Adjustable(Protocol):
    """What an admin-controlled part of the sandbox offers (archive store, stream hub)."""

    @property
    def settings(self) -> Any: ...  # with `to_dict()`

    def stats(self) -> dict[str, Any]: ...

    def reset(self) -> None: ...

    def configure(self, knobs: dict[str, Any]) -> Any: ...


def add_admin_routes(
    app: web.Application, key: web.AppKey[Any], *, stats: str, reset: str, config: str
) -> None:
    """`GET stats`, `POST reset` and `GET|POST config` (400 naming a bad knob) for the
    `Adjustable` stored under `key`."""

    async def get_stats(request: web.Request) -> web.Response:
        return web.json_response(request.app[key].stats())

    async def do_reset(request: web.Request) -> web.Response:
        request.app[key].reset()
        return web.json_response({"ok": True})

    async def do_config(request: web.Request) -> web.Response:
        part: Adjustable = request.app[key]
        if request.method == "POST":
            try:
                part.configure(await read_json_object(request))
            except (ValueError, TypeError) as exc:
                return web.json_response({"error": str(exc)}, status=400)
        return web.json_response(part.settings.to_dict())

    app.router.add_get(stats, get_stats)
    app.router.add_post(reset, do_reset)
    app.router.add_get(config, do_config)
    app.router.add_post(config, do_config)
