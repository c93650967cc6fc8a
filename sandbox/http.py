"""Small HTTP helpers shared by the sandbox's admin routes."""

from __future__ import annotations

import json
from typing import Any

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
