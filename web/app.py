"""The web app: pages rendered on the server from csmd's replies, one event stream per page.

Starlette (routing, forms, streaming responses) on uvicorn, Jinja2 templates with autoescaping.
Every page asks csmd over its control socket (``transport.arequest``), so csmd's query limits and
read-only door apply as they do for the CLI; when csmd is not running every page says so with
the command that starts it, and reloads itself once csmd answers again. Every list is paged and
every filter is in the URL, so a view can be bookmarked.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator
from importlib import resources
from pathlib import Path
from typing import Any

from markupsafe import Markup
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from csm.client.render import plain
from csm.client.transport import START_HINT, aconversation, arequest
from csm.shared import protocol, timespec
from csm.shared.config import Team
from csm.shared.errors import ConfigError, CsmError, DaemonNotRunning, NotFound, QueryError, TeamUnavailable
from csm.web import conversation, scope, views
from csm.web.guard import Guard
from csm.web.live import Hub

SESSIONS_PAGE = 50
ENTRIES_PAGE = 200
HITS_PAGE = 20
USAGE_PAGE = 100
USAGE_GROUPS = ("day", "week", "month", "model", "project")
TEAM_USAGE_GROUPS = ("member", "machine", *USAGE_GROUPS)


class Web:
    """The pages and their shared state: the token, the templates, the live hub, a sync in progress."""

    def __init__(self, token: str) -> None:
        self.token = token
        self.env = conversation.environment()
        self.hub = Hub()
        self.sync_task: asyncio.Task[protocol.Message] | None = None
        self.static = str(resources.files("csm.web") / "static")

    # --- plumbing ------------------------------------------------------------------

    def page(self, request: Request, name: str, status: int = 200, **ctx: Any) -> HTMLResponse:
        ctx.setdefault("sessions_live", "")
        html = self.env.get_template(name).render(request=request, token=self.token, nav=name.split(".")[0], **ctx)
        return HTMLResponse(html, status_code=status)

    @staticmethod
    async def rows(req: protocol.Request) -> tuple[list[dict[str, Any]], str | None]:
        """csmd's rows for a list page, one dict a row, or none and the query's own error (a bad filter is
        the page's 400); csmd itself unreachable raises, for ``down``."""
        try:
            reply = await arequest(req, timeout_s=30.0)
        except QueryError as e:
            return [], str(e)
        assert isinstance(reply, protocol.Rows)
        return [dict(zip(reply.columns, r)) for r in reply.rows], None

    def down(self, request: Request, e: CsmError) -> HTMLResponse:
        return self.page(request, "down.html", 503, error=str(e), start="csmd", service="csm service install")

    def team_down(self, request: Request, name: str, team: Team | None, e: TeamUnavailable,
                  **ctx: Any) -> HTMLResponse:
        """A team view while the team database cannot answer: the page with its one line (the CLI's), and
        the switch, whose "mine" side still works."""
        empty: dict[str, Any] = {"rows": [], "hits": [], "columns": [], "keys": 0, "chart": "", "unpriced": []}
        for key, value in empty.items():
            ctx.setdefault(key, value)
        return self.page(request, name, 503, team_error=str(e), team_on=team is not None, in_team=True, more=False,
                         **ctx)

    async def checked_form(self, request: Request) -> dict[str, str]:
        """A POST's form (urlencoded: the pages send nothing else), after its token (header or field)
        is checked: the cookie alone is not enough."""
        from urllib.parse import parse_qsl

        form = dict(parse_qsl((await request.body()).decode("utf-8", "replace"), keep_blank_values=True))
        if request.scope.get("state", {}).get("check_form_token") and form.get("token") != self.token:
            raise PermissionError
        return form

    @staticmethod
    def zone(request: Request) -> str:
        """The browser's zone: ``tz`` in the URL, else the cookie app.js keeps, else UTC."""
        name = request.query_params.get("tz") or request.cookies.get("csm_tz") or "UTC"
        try:
            timespec.zone(name)
            return name
        except ValueError:
            return "UTC"

    @staticmethod
    def times(request: Request, zone: str) -> tuple[str | None, str | None, str | None]:
        """``since``/``until`` from the URL read by the one time grammar, as wire instants; or a message."""
        tz = timespec.zone(zone)
        out: list[str | None] = []
        for key, end in (("since", False), ("until", True)):
            word = request.query_params.get(key, "").strip()
            if not word:
                out.append(None)
                continue
            try:
                out.append(timespec.wire(timespec.parse(word, end=end, zone=tz)))
            except ValueError as e:
                return None, None, f"{key}: {e}"
        return out[0], out[1], None

    async def team(self, request: Request) -> tuple[Team | None, bool]:
        """``[team]`` (the switch is shown only with it), and whether this view asks for the team's answers."""
        from csm.client.team import of

        cfg, _ = await self._config()
        return of(cfg), scope.is_team(request)

    @staticmethod
    def page_number(request: Request) -> int:
        try:
            return max(0, int(request.query_params.get("page", "1")) - 1)
        except ValueError:
            return 0

    # --- pages ---------------------------------------------------------------------

    async def status_page(self, request: Request) -> Response:
        try:
            s = await arequest(protocol.Status(), timeout_s=5.0)
        except CsmError as e:
            return self.down(request, e)
        return self.page(request, "status.html", figures=plain(s), live="status")

    async def api_status(self, request: Request) -> Response:
        try:
            s = await arequest(protocol.Status(), timeout_s=5.0)
        except CsmError as e:
            return JSONResponse({"error": str(e), "start": "csmd"}, status_code=503)
        return JSONResponse(plain(s))

    async def sync(self, request: Request) -> Response:
        """Sync now: one rescan at a time (a second press joins it); progress goes to every page's stream."""
        try:
            await self.checked_form(request)
        except PermissionError:
            return Response("forbidden: the form's token is missing", status_code=403)
        if self.sync_task is None or self.sync_task.done():
            self.sync_task = asyncio.get_running_loop().create_task(self._sync())
        try:
            reply = await asyncio.shield(self.sync_task)
        except CsmError as e:
            return JSONResponse({"error": str(e)}, status_code=503)
        if "application/json" not in request.headers.get("accept", ""):
            return RedirectResponse("/", status_code=303)
        return JSONResponse(plain(reply))

    async def _sync(self) -> protocol.Message:
        async def progress(p: protocol.Message) -> None:
            if isinstance(p, protocol.Progress):
                self.hub.publish("progress", plain(p.backlog))

        try:
            reply = await arequest(protocol.Sync(), timeout_s=60.0, on_progress=progress)
        except CsmError as e:
            self.hub.publish("synced", {"error": str(e)})
            raise
        self.hub.publish("synced", plain(reply))
        return reply

    async def sessions(self, request: Request) -> Response:
        q = request.query_params
        zone = self.zone(request)
        since, until, bad = self.times(request, zone)
        n = self.page_number(request)
        team, in_team = await self.team(request)
        rows: list[dict[str, Any]] = []
        if not bad and in_team:
            from csm.team import read

            try:
                columns, found = await scope.read(team, read.sessions, q.get("project") or None, since, until,
                                                  (n + 1) * SESSIONS_PAGE + 1)
            except TeamUnavailable as e:
                return self.team_down(request, "sessions.html", team, e, q=q, n=n)
            rows = [dict(zip(columns, r)) for r in found[n * SESSIONS_PAGE:]]
        elif not bad:
            req = protocol.Sessions(project=q.get("project") or None, since=since, until=until,
                                    title=q.get("title") or None, limit=SESSIONS_PAGE + 1, offset=n * SESSIONS_PAGE)
            try:
                rows, bad = await self.rows(req)
            except CsmError as e:
                return self.down(request, e)
        more = len(rows) > SESSIONS_PAGE
        name = "sessions_rows.html" if q.get("fragment") else "sessions.html"
        return self.page(request, name, 400 if bad else 200, rows=rows[:SESSIONS_PAGE], error=bad, q=q, n=n,
                         more=more, live="sessions", team_on=team is not None, in_team=in_team)

    @staticmethod
    def target(request: Request) -> str:
        """The session a URL names: an id (or the start of one), or a transcript's path (``/session/home/…jsonl``:
        the path's leading slash is the URL's), which is how a session id found in several places is opened."""
        sid: str = request.path_params["sid"]
        return "/" + sid if sid.endswith(".jsonl") and not sid.startswith("/") else sid

    async def session(self, request: Request) -> Response:
        """A page of ``ENTRIES_PAGE`` entries (the one a search hit is on, with ``at``); csmd sends only those.
        ``fragment=1``: the entries alone, which the live page fetches to show new lines as a reload would."""
        sid = self.target(request)
        q = request.query_params
        n = self.page_number(request)
        at = q.get("at") if "page" not in q else None
        try:
            t = await arequest(protocol.Show(session=sid, full=True, offset=n * ENTRIES_PAGE, limit=ENTRIES_PAGE,
                                             at=at), timeout_s=60.0)
        except NotFound as e:
            return self.page(request, "error.html", 404, error=str(e))
        except QueryError as e:  # an ambiguous id: each place it is in gets a link of its own
            places = re.findall(r"(/[^,\s]+\.jsonl)", str(e))
            return self.page(request, "error.html", 400, error=str(e), places=places)
        except CsmError as e:
            return self.down(request, e)
        assert isinstance(t, protocol.Transcript)
        n = t.offset // ENTRIES_PAGE
        pages = max(1, -(-t.total // ENTRIES_PAGE)) if t.complete else n + 2
        shown = list(enumerate(t.entries, t.offset))
        ids = sorted({t.session.session_id, *(e.session_id for e in t.entries if e.session_id)})
        info = t.session
        name = "session_entries.html" if q.get("fragment") else "session.html"
        return self.page(request, name, info=info, entries=shown, hit=t.hit, n=n, pages=pages, total=t.total,
                         size=ENTRIES_PAGE, last_page=n == pages - 1, complete=t.complete, live="session", sessions_live=",".join(ids),
                         resume=info.resume or "", target=sid.lstrip("/"))

    async def export(self, request: Request) -> Response:
        sid, fmt = self.target(request), request.path_params["fmt"]
        if fmt not in ("md", "html", "jsonl"):
            return Response("exports: .md, .html, .jsonl", status_code=404)
        try:
            if fmt == "jsonl":
                chunks: list[bytes] = []

                def chunk(msg: protocol.Message) -> None:
                    if isinstance(msg, protocol.Chunk):
                        if msg.seq != len(chunks):
                            raise CsmError(f"export interrupted: piece {len(chunks)} was lost")
                        chunks.append(msg.data)

                await arequest(protocol.Export(target=sid, format="jsonl"), timeout_s=30.0, on_progress=chunk)
                body, media = b"".join(chunks), "application/jsonl"
            else:
                from csm.client import layouts

                t = await aconversation(protocol.Show(session=sid, full=True), timeout_s=60.0)
                text = layouts.markdown(t) if fmt == "md" else conversation.page(t.session, t.entries)
                body, media = text.encode(), "text/markdown" if fmt == "md" else "text/html"
        except NotFound as e:
            return Response(str(e), status_code=404)
        except CsmError as e:
            return Response(str(e), status_code=503)
        name = "".join(c for c in Path(sid).name.removesuffix(".jsonl") if c.isalnum() or c in "-_") or "session"
        return Response(body, media_type=media,
                        headers={"content-disposition": f'attachment; filename="{name}.{fmt}"'})

    async def search(self, request: Request) -> Response:
        q = request.query_params
        text = q.get("q", "").strip()
        zone = self.zone(request)
        since, until, bad = self.times(request, zone)
        n = self.page_number(request)
        team, in_team = await self.team(request)
        hits: list[dict[str, Any]] = []
        if text and not bad and in_team:
            from csm.team import read

            try:
                columns, found = await scope.read(team, read.search, text, q.get("project") or None, since, until,
                                                  (n + 1) * HITS_PAGE + 1)
            except TeamUnavailable as e:
                return self.team_down(request, "search.html", team, e, q=q, n=n, text=text)
            hits = [dict(zip(columns, r)) for r in found]
        elif text and not bad:
            req = protocol.Search(text=text, project=q.get("project") or None, since=since, until=until,
                                  include_tools=q.get("tools") == "1", limit=(n + 1) * HITS_PAGE + 1)
            try:
                hits, bad = await self.rows(req)
            except CsmError as e:
                return self.down(request, e)
        more = len(hits) > (n + 1) * HITS_PAGE
        return self.page(request, "search.html", 400 if bad else 200, hits=hits[n * HITS_PAGE: (n + 1) * HITS_PAGE],
                         error=bad, q=q, text=text, n=n, more=more, team_on=team is not None, in_team=in_team)

    async def usage(self, request: Request) -> Response:
        q = request.query_params
        team, in_team = await self.team(request)
        groups = TEAM_USAGE_GROUPS if in_team else USAGE_GROUPS
        by = q.get("by", "day") if q.get("by") in groups else "day"
        zone = self.zone(request)
        since, until, bad = self.times(request, zone)
        n = self.page_number(request)
        columns: list[str] = []
        rows: list[list[Any]] = []
        unpriced: list[str] = []
        if not bad and in_team:
            from csm.team import read

            try:
                columns, rows = await scope.read(team, read.usage, by, since, until, zone, q.get("project") or None)
            except TeamUnavailable as e:
                return self.team_down(request, "usage.html", team, e, q=q, n=n, by=by, groups=groups, zone=zone)
        elif not bad:
            req = protocol.UsageReport(by=by, since=since, until=until, tz=zone, project=q.get("project") or None)
            try:
                reply = await arequest(req, timeout_s=30.0)
            except QueryError as e:
                bad = str(e)
            except CsmError as e:
                return self.down(request, e)
            else:
                assert isinstance(reply, protocol.UsageRows)
                columns, rows, unpriced = reply.columns, reply.rows, reply.unpriced_models
        shown = rows[n * USAGE_PAGE: (n + 1) * USAGE_PAGE]
        chart = Markup("")
        keys = columns.index("responses") if columns else 0
        if shown:
            at = {c: i for i, c in enumerate(columns)}
            chart = views.chart([" ".join(str(v) for v in r[:keys]) for r in shown],
                                [r[at["total_tokens"]] or 0 for r in shown],
                                [bool(r[at["unpriced_tokens"]]) for r in shown])
        return self.page(request, "usage.html", 400 if bad else 200, by=by, groups=groups, zone=zone,
                         columns=columns, rows=shown, keys=keys, chart=chart, unpriced=unpriced, error=bad, q=q, n=n,
                         more=len(rows) > (n + 1) * USAGE_PAGE, team_on=team is not None, in_team=in_team)

    async def settings(self, request: Request) -> Response:
        message = error = None
        status = 200
        if request.method == "POST":
            try:
                form = await self.checked_form(request)
            except PermissionError:
                return Response("forbidden: the form's token is missing", status_code=403)
            message, error = await self._apply(form)
            status = 400 if error else 200
        cfg, local = await self._config()
        return self.page(request, "settings.html", status, cfg=plain(cfg), local=local, message=message, error=error)

    async def _config(self) -> tuple[protocol.ConfigReply, str | None]:
        try:
            reply = await arequest(protocol.GetConfig(), timeout_s=5.0)
            assert isinstance(reply, protocol.ConfigReply)
            return reply, None
        except DaemonNotRunning:
            from csm.shared import config

            r = config.resolve()
            return protocol.ConfigReply(pid=0, config_file=r.file, config_file_exists=r.file_exists,
                                        config_file_source=r.file_source, settings=r.sources), \
                f"csmd is not running: read from the file here; {START_HINT}"

    async def _apply(self, form: Any) -> tuple[str | None, str | None]:
        """Write the changed settings through the resolver that validates them, then have csmd reload."""
        from csm.shared import config

        cfg, local = await self._config()
        changes: dict[str, Any] = {}
        try:
            roots = [r.strip() for r in str(form.get("roots", "")).splitlines() if r.strip()]
            if roots != cfg.settings["roots"].value:
                changes["roots"] = roots
            interval = config.parse_value("rescan_interval_s", str(form.get("rescan_interval_s", "")))
            if interval != cfg.settings["rescan_interval_s"].value:
                changes["rescan_interval_s"] = interval
            if not changes:
                return "nothing changed", None
            await asyncio.to_thread(config.write, Path(cfg.config_file), changes)
        except ConfigError as e:
            return None, str(e)
        if local:
            return f"saved to {cfg.config_file}; csmd applies it when it starts", None
        try:
            done = await arequest(protocol.ReloadConfig(), timeout_s=10.0)
        except CsmError as e:
            return None, f"saved to {cfg.config_file}, but csmd did not apply it: {e}"
        assert isinstance(done, protocol.Ok)
        return f"saved to {cfg.config_file}; csmd {done.message}", None

    async def events(self, request: Request) -> Response:
        """The page's event stream: csmd's new messages (one session's, or all), and status for the front page."""
        q = request.query_params
        wanted = {s for s in q.get("sessions", "").split(",") if s} or None
        try:
            last = int(request.headers.get("last-event-id", ""))
        except ValueError:
            last = None

        async def tick() -> tuple[str, Any]:
            try:
                return "status", plain(await arequest(protocol.Status(), timeout_s=5.0))
            except CsmError as e:
                return "status", {"error": str(e)}

        stream = self.hub.stream(wanted, last, tick if q.get("page") == "status" else None)
        return StreamingResponse(_until_gone(request, stream), media_type="text/event-stream",
                                 headers={"x-accel-buffering": "no"})


async def _until_gone(request: Request, stream: AsyncIterator[str]) -> AsyncIterator[str]:
    try:
        async for chunk in stream:
            yield chunk
    finally:
        await stream.aclose()  # type: ignore[attr-defined]


def build(token: str, host: str, port: int) -> Any:
    """The ASGI app: the pages behind the guard."""
    from csm.web.guard import allowed_hosts

    web = Web(token)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        web.hub.start()
        yield
        await web.hub.stop()

    app = Starlette(routes=[
        Route("/", web.status_page),
        Route("/api/status", web.api_status),
        Route("/sync", web.sync, methods=["POST"]),
        Route("/sessions", web.sessions),
        Route("/session/{sid:path}/export.{fmt:str}", web.export),
        Route("/session/{sid:path}", web.session),
        Route("/search", web.search),
        Route("/usage", web.usage),
        Route("/settings", web.settings, methods=["GET", "POST"]),
        Route("/events", web.events),
        Mount("/static", StaticFiles(directory=web.static), name="static"),
    ], lifespan=lifespan)
    app.state.web = web
    return Guard(app, token, allowed_hosts(host, port), port)
