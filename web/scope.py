"""The pages' "Mine | Team" switch: ``scope=team`` in the URL answers from the team's PostgreSQL.

The answers come from ``csm.team.read``, the functions ``csm query … --team`` uses, on a connection
made as the CLI makes it (``client.team.team_db``: the member's own role, so PostgreSQL's row-level
security decides what is seen; every failure one ``TeamUnavailable`` line). psycopg is blocking, so
each read runs in a worker thread and the event loop goes on serving "mine" and the live streams.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, TypeVar

from starlette.requests import Request

from csm.shared.config import Team

T = TypeVar("T")


def is_team(request: Request) -> bool:
    return request.query_params.get("scope") == "team"


async def read(team: Team | None, fn: Callable[..., T], *args: Any) -> T:
    """``fn(connection, *args)`` on a fresh connection to the team database, in a worker thread."""
    from csm.client.team import team_db

    def run() -> T:
        with team_db(team) as pg:
            return fn(pg, *args)

    return await asyncio.to_thread(run)
