"""``csm serve``'s figures: time to first byte of each page, and how soon a written line shows live.

    python bench/corpus.py /tmp/web-c100 --size-mb 100       # once
    python bench/web_ttfb.py --corpus /tmp/web-c100 [--repeat 20] [--appends 20] [--messages 5000]

Starts csmd on the corpus (a private home, as bench/run.py does), waits for its first scan,
starts ``csm serve``, then asks each page ``--repeat`` times over HTTP with the token cookie,
interleaved (one round of every page, then the next round), and reports the median and
maximum time from sending the request to the response's first line (headers: the page is
rendered whole before it is sent). Live: appends a line to a session file ``--appends`` times
while a page's event stream is open and reports the median and p99 from the write to the
``entry`` event.

A generated session of ``--messages`` messages (prompts, Markdown answers, tool calls with their
input and output; a second root beside the corpus) measures a long session's first screen: its
first and last page over HTTP, and, interleaved, csmd's ``Show`` of the whole session against
``Show`` of one page (``limit``), which is what the Session page asks for.
Figures and the command are recorded in bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from run import Csmd, Home, csm_cmd, wait_scanned  # noqa: E402


def ttfb(port: int, token: str, path: str) -> float:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    t = time.perf_counter()
    conn.request("GET", path, headers={"Host": f"127.0.0.1:{port}", "Cookie": f"csm_token_{port}={token}"})
    r = conn.getresponse()
    first = time.perf_counter() - t
    r.read()
    conn.close()
    if r.status != 200:
        raise SystemExit(f"{path}: HTTP {r.status}")
    return first * 1000


def live(port: int, token: str, path: Path, session: str, n: int) -> list[float]:
    """Write a line, read the stream until its entry arrives: milliseconds, one per append."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.request("GET", f"/events?page=session&sessions={session}",
                 headers={"Host": f"127.0.0.1:{port}", "Cookie": f"csm_token_{port}={token}"})
    r = conn.getresponse()
    lines = iter(r)
    while b"event: csmd" not in next(lines):
        pass
    out = []
    for i in range(n):
        marker = f"bench-live-{i}-{time.time_ns()}"
        line = {"type": "user", "uuid": marker, "sessionId": session, "timestamp": "2026-03-01T10:00:00.000Z",
                "message": {"role": "user", "content": marker}}
        t = time.perf_counter()
        with open(path, "a") as f:
            f.write(json.dumps(line) + "\n")
        while marker.encode() not in next(lines):
            pass
        out.append((time.perf_counter() - t) * 1000)
    conn.close()
    return out


def long_session(folder: Path, session: str, messages: int) -> Path:
    """``messages`` messages in rounds of four: a prompt, an answer with a tool call, its result, an answer."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{session}.jsonl"
    answer = "Here is what I found:\n\n```python\ndef f(x):\n    return x * 2\n```\n\n" + "Some prose. " * 40
    with open(path, "w") as f:
        for n in range(0, messages, 4):
            ts = f"2026-03-01T{(n // 3600) % 24:02d}:{(n // 60) % 60:02d}:{n % 60:02d}.000Z"
            base = {"sessionId": session, "timestamp": ts, "cwd": "/bench/long"}
            lines = [
                {"type": "user", "uuid": f"u{n}", "message": {"role": "user", "content": f"question {n}: " + "why? " * 30}},
                {"type": "assistant", "uuid": f"a{n}", "requestId": f"r{n}", "message": {
                    "id": f"m{n}", "role": "assistant", "model": "claude-bench-1", "content": [
                        {"type": "text", "text": answer},
                        {"type": "tool_use", "id": f"t{n}", "name": "Bash", "input": {"command": f"ls -la /dir/{n}"}}]}},
                {"type": "user", "uuid": f"r{n}", "message": {"role": "user", "content": [
                    {"type": "tool_result", "tool_use_id": f"t{n}", "content": "drwxr-xr-x file\n" * 40}]}},
                {"type": "assistant", "uuid": f"b{n}", "requestId": f"s{n}", "message": {
                    "id": f"n{n}", "role": "assistant", "model": "claude-bench-1",
                    "content": [{"type": "text", "text": answer}]}},
            ]
            for line in lines:
                f.write(json.dumps({**line, **base}) + "\n")
    return path


def show_ms(env: dict[str, str], session: str, limit: int | None) -> float:
    """One ``Show(full=True)`` of the session through the client transport, whole or one page: ms."""
    code = ("import sys, time; from csm.client.transport import request; from csm.shared import protocol; "
            "t = time.perf_counter(); "
            f"r = request(protocol.Show(session={session!r}, full=True, limit={limit!r}), timeout_s=120); "
            "print((time.perf_counter() - t) * 1000, len(r.entries))")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    return float(out.stdout.split()[0])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--corpus", type=Path, help="a corpus (bench/corpus.py); without it, the long session alone")
    ap.add_argument("--messages", type=int, default=5000, help="messages in the generated long session")
    ap.add_argument("--repeat", type=int, default=20)
    ap.add_argument("--appends", type=int, default=20)
    a = ap.parse_args()
    import tempfile

    base = Path(tempfile.mkdtemp(prefix="csm-web-bench-"))
    home = Home(base, "main")
    if a.corpus:
        home.projects.rmdir()
        home.projects.symlink_to(a.corpus.resolve(), target_is_directory=True)
    long_id = "bench-long-session"
    long_session(base / "long" / "projects" / "-bench-long", long_id, a.messages)
    home.env["CLAUDE_CONFIG_DIR"] = f"{home.dir / 'claude'},{base / 'long'}"
    d = Csmd(home).start()
    serve = None
    try:
        wait_scanned(home, d)
        out = base / "serve.out"
        with open(out, "wb") as f:
            serve = subprocess.Popen([*csm_cmd(), "serve", "--port", "0"], stdout=f, stderr=subprocess.STDOUT,
                                     env=home.env)
        deadline = time.monotonic() + 30
        while not (m := re.search(r"127\.0\.0\.1:(\d+)/\?token=(\S+)", out.read_text())):
            if time.monotonic() > deadline:
                raise SystemExit("csm serve printed no URL")
            time.sleep(0.05)
        port, token = int(m.group(1)), m.group(2)
        q = subprocess.run([*csm_cmd(), "query", "sql", "--json", "SELECT session_id, messages, project FROM sessions "
                            f"WHERE NOT is_subagent AND session_id != '{long_id}' ORDER BY messages DESC LIMIT 1"],
                           env=home.env, capture_output=True, text=True, check=True)
        rows = json.loads(q.stdout)
        big = rows[0] if rows else None
        pages = {"status": "/", "sessions": "/sessions", "search": "/search?q=phoenix",
                 "usage": "/usage?by=day&tz=UTC",
                 f"long session, page 1 ({a.messages} msgs)": f"/session/{long_id}",
                 "long session, last page": f"/session/{long_id}?page=9999"}
        if big:
            pages[f"largest ({big['messages']} messages)"] = f"/session/{big['session_id']}"
        times: dict[str, list[float]] = {k: [] for k in pages}
        for path in pages.values():
            ttfb(port, token, path)  # warm: the first request pays for imports and template compiling
        for _ in range(a.repeat):
            for name, path in pages.items():
                times[name].append(ttfb(port, token, path))
        print(f"load average {os.getloadavg()[0]:.1f}; median (max) of {a.repeat}, ms to first byte:")
        for name, xs in times.items():
            print(f"  {name:<36} {statistics.median(xs):7.1f}  ({max(xs):.1f})")
        shows: dict[str, list[float]] = {"whole": [], "one page (limit 200)": []}
        for _ in range(max(3, a.repeat // 4)):
            shows["whole"].append(show_ms(home.env, long_id, None))
            shows["one page (limit 200)"].append(show_ms(home.env, long_id, 200))
        for name, xs in shows.items():
            print(f"  Show of the long session, {name:<22} median {statistics.median(xs):7.1f} ms  ({max(xs):.1f})")
        target = base / "long" / "projects" / "-bench-long" / f"{long_id}.jsonl"
        lat = sorted(live(port, token, target, long_id, a.appends))
        p99 = lat[min(len(lat) - 1, int(0.99 * len(lat)))]
        print(f"  new line on an open page     median {statistics.median(lat):.0f} ms, p99 {p99:.0f} ms "
              f"({a.appends} appends)")
    finally:
        if serve is not None:
            serve.terminate()
            serve.wait(10)
        d.stop()
        home.cleanup()
        shutil.rmtree(base, ignore_errors=True)  # the archive and the generated session


if __name__ == "__main__":
    main()
