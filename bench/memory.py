"""csmd's memory under the four loads issue 10 names, read from /proc/<pid>/status.

    pip install -e . && python bench/memory.py [--only line,query,export,watch] [--line-mb 50]

- ``line``: one transcript line of ``--line-mb`` MB (a user prompt of ASCII words) appended to a
  live file: csmd's peak RSS (``VmHWM``) while it stores it, and its RSS once it is stored.
- ``query``: ``csm query sql`` with ``randomblob(900000000)`` and the other ways SQL can build a
  big value (zeroblob, printf, replace, group_concat over a recursive CTE): peak and after.
- ``export``: a 287 MB file exported by a ``csm export --raw`` client that is stopped (SIGSTOP)
  for ``--stop-s`` seconds: csmd's RSS while it is stopped, and whether the output is exact.
- ``watch``: a stopped ``csm watch`` client while 60 MB of messages are appended.

Each phase runs on a fresh csmd (its own baseline), in a temporary home (see run.py's ``Home``).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from run import Csmd, Home, csm_cmd  # noqa: E402


def status_kb(pid: int) -> dict[str, int]:
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            out[key] = int(value.split()[0])
    return out


def mb(kb: int) -> float:
    return round(kb / 1024, 1)


def rows(home: Home, query: str) -> list[list[object]]:
    r = subprocess.run([*csm_cmd(), "query", "sql", query, "--json"], env=home.env, capture_output=True,
                       text=True, timeout=120)
    if r.returncode:
        raise SystemExit(f"query failed: {r.stderr}")
    return [list(x.values()) for x in json.loads(r.stdout)]


def wait(cond, timeout: float, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {what}")
        time.sleep(0.05)


def started(home: Home) -> Csmd:
    d = Csmd(home).start()
    wait(lambda: subprocess.run([*csm_cmd(), "status"], env=home.env, capture_output=True).returncode == 0, 30,
         "csmd")
    subprocess.run([*csm_cmd(), "sync", "--now"], env=home.env, capture_output=True, timeout=120)
    return d


def user_line(session: str, text: str, i: int = 0) -> bytes:
    return json.dumps({"type": "user", "sessionId": session, "uuid": f"u{i}", "timestamp": "2026-11-01T10:00:00Z",
                       "message": {"role": "user", "content": text}}).encode() + b"\n"


def with_file(home: Home, name: str) -> tuple[Path, Csmd, dict[str, int]]:
    """A transcript of one short line, a csmd that has read it, and csmd's memory then."""
    f = home.projects / "p" / f"{name}.jsonl"
    f.parent.mkdir(parents=True, exist_ok=True)
    f.write_bytes(user_line(name, "small first line"))
    d = started(home)
    return f, d, status_kb(d.pid)


def phase_line(home: Home, line_mb: int) -> dict[str, float]:
    f, d, base = with_file(home, "big")
    with open(f, "ab") as out:
        out.write(user_line("big", "lorem ipsum dolor sit amet, " * ((line_mb << 20) // 28), 1))
    print("  stored; RSS", mb(status_kb(d.pid)["VmRSS"]), file=sys.stderr)
    wait(lambda: rows(home, "SELECT count(*) FROM events")[0][0] == 2, 120, "the long line")
    time.sleep(1.0)  # what the commit hooks and the checkpoint thread do after it
    after = status_kb(d.pid)
    rows(home, "SELECT length(raw) FROM events")
    print("  after a query reading it: RSS", mb(status_kb(d.pid)["VmRSS"]), file=sys.stderr)
    d.stop()
    return {"base_mb": mb(base["VmRSS"]), "peak_mb": mb(after["VmHWM"]), "after_mb": mb(after["VmRSS"])}


QUERIES = [
    "SELECT length(randomblob(900000000))",
    "SELECT length(zeroblob(900000000))",
    "SELECT length(printf('%.*c', 900000000, 'x'))",
    "SELECT length(replace(hex(zeroblob(1000000)), '0', hex(zeroblob(500))))",
    "WITH RECURSIVE r(i, s) AS (SELECT 0, 'x' UNION ALL SELECT i + 1, s || s FROM r WHERE i < 40) "
    "SELECT max(length(s)) FROM r",
    "WITH RECURSIVE r(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM r WHERE i < 2000) "
    "SELECT length(group_concat(hex(randomblob(500000)))) FROM r",
    "SELECT " + ", ".join(["randomblob(60000000)"] * 8),
    "SELECT " + " || ".join(["randomblob(20000000)"] * 8),
]


def phase_query(home: Home) -> dict[str, object]:
    d = started(home)
    base = status_kb(d.pid)
    out: dict[str, object] = {"base_mb": mb(base["VmRSS"])}
    for q in QUERIES:
        r = subprocess.run([*csm_cmd(), "query", "sql", q], env=home.env, capture_output=True, text=True, timeout=60)
        print(f"  {q[:60]}…: exit {r.returncode} {(r.stderr or r.stdout).strip()[:100]}", file=sys.stderr)
    after = status_kb(d.pid)
    d.stop()
    out.update(peak_mb=mb(after["VmHWM"]), after_mb=mb(after["VmRSS"]))
    return out


def phase_export(home: Home, size_mb: int, stop_s: float) -> dict[str, object]:
    f = home.projects / "p" / "huge.jsonl"
    f.parent.mkdir(parents=True, exist_ok=True)
    line = user_line("huge", "y" * 20000)
    with open(f, "wb") as out:
        for i in range(size_mb * (1 << 20) // len(line)):
            out.write(line)
    d = started(home)
    wait(lambda: rows(home, "SELECT count(*) FROM events")[0][0] == f.stat().st_size // len(line), 600, "ingest")
    base = status_kb(d.pid)
    with tempfile.TemporaryFile() as sink:
        client = subprocess.Popen([*csm_cmd(), "export", "--raw", "huge"], env=home.env, stdout=sink)
        time.sleep(0.3)
        client.send_signal(signal.SIGSTOP)
        peak_stopped = 0
        deadline = time.monotonic() + stop_s
        while time.monotonic() < deadline:
            peak_stopped = max(peak_stopped, status_kb(d.pid)["VmRSS"])
            time.sleep(0.1)
        client.send_signal(signal.SIGCONT)
        code = client.wait(300)
        sink.seek(0)
        exact = hashlib.sha256(sink.read()).digest() == hashlib.sha256(f.read_bytes()).digest()
    after = status_kb(d.pid)
    d.stop()
    return {"base_mb": mb(base["VmRSS"]), "stopped_max_rss_mb": mb(peak_stopped), "peak_mb": mb(after["VmHWM"]),
            "after_mb": mb(after["VmRSS"]), "exit": code, "byte_exact": exact}


def phase_watch(home: Home, total_mb: int) -> dict[str, object]:
    f, d, base = with_file(home, "w")
    client = subprocess.Popen([*csm_cmd(), "watch"], env=home.env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    time.sleep(1.0)
    client.send_signal(signal.SIGSTOP)
    n = 0
    per = 2000
    text = "z" * 1900
    with open(f, "ab") as out:
        while n * 2000 < total_mb << 20:
            out.write(b"".join(user_line("w", text, n + i) for i in range(per)))
            out.flush()
            n += per
            time.sleep(0.05)
    wait(lambda: rows(home, "SELECT count(*) FROM events")[0][0] == n + 1, 300, "ingest")
    time.sleep(1.0)
    stopped = status_kb(d.pid)
    client.kill()
    client.wait()
    d.stop()
    return {"base_mb": mb(base["VmRSS"]), "stopped_rss_mb": mb(stopped["VmRSS"]), "peak_mb": mb(stopped["VmHWM"])}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--only", default="line,query,export,watch")
    ap.add_argument("--line-mb", type=int, default=50)
    ap.add_argument("--export-mb", type=int, default=287)
    ap.add_argument("--stop-s", type=float, default=5.0)
    ap.add_argument("--watch-mb", type=int, default=60)
    args = ap.parse_args()
    results: dict[str, object] = {}
    with tempfile.TemporaryDirectory(prefix="csm-mem-") as tmp:
        for name in args.only.split(","):
            home = Home(Path(tmp), name)
            try:
                if name == "line":
                    results[name] = phase_line(home, args.line_mb)
                elif name == "query":
                    results[name] = phase_query(home)
                elif name == "export":
                    results[name] = phase_export(home, args.export_mb, args.stop_s)
                elif name == "watch":
                    results[name] = phase_watch(home, args.watch_mb)
                print(name, results[name], file=sys.stderr, flush=True)
            finally:
                home.cleanup()
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
