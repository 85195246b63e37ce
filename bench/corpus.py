"""A realistic, deterministic corpus of Claude Code transcripts, for benchmarks.

``python bench/corpus.py OUT_DIR --size-mb 100 [--files N] [--seed S]`` writes about N MB of
JSONL into ``OUT_DIR`` as a Claude Code ``projects/`` folder: ``<project>/<session>.jsonl``
and subagents under ``<project>/<session>/subagents/agent-<id>.jsonl``. Import it as
``write_corpus(path, size_mb, files=None, seed=0)``; ``LineMaker`` makes single lines
(``bench/run.py`` appends them to measure freshness).

How it was calibrated. ``measure()`` (also ``python bench/corpus.py --measure DIR``) reads a
tree of transcripts and reports the line-size distribution and type mix. On the real
transcripts in the shared fixtures (158 files, 13,428 lines, 28.8 MB; Claude Code
2.0-2.1) it gives:

    line size (bytes, with the newline): median 654, mean 2,142, p90 2,889, p99 27,306,
    p99.9 81,636, max 1,046,941 (3 lines over 500 KB, all user lines: pasted images)
    types: progress 52.0 %, assistant 26.5 %, user 18.0 % (87 % of them tool results),
    system 1.2 %, file-history-snapshot 1.1 %, attachment 0.4 %, summary 0.3 %,
    queue-operation 0.3 %; 16 % of the files are subagent files
    an assistant response (one message.id) spans 1-10 lines: 1: 37 %, 2: 46 %, 3: 10 %,
    4: 5 %, 5+: 2 % of responses (streaming splits, usage repeated on each line)

The per-type size tables below (``SIZES``) are those files' measured quantiles; a line's
size is drawn from its type's table by inverse-CDF interpolation and reached by padding a
text field with words. The mix of line types per assistant turn is the measured ratio
(about 4.2 progress lines, 1.26 tool results and 0.19 prompts per response). The top of the
prompt table is smoothed (the real sample has only three lines over 500 KB, so its own top
quantiles would put ~15 such lines in 100 MB). Measured on a 100 MB corpus written by this
module (seed 0, 300 files): median 662, mean 2,162, p90 2,994, p99 27,705, p99.9 90,566,
max 918,101 (3 lines over 500 KB); progress 52.7 %, assistant 24.9 %, user 19.1 %;
48 subagent files (16 %).
"""

from __future__ import annotations

import argparse
import bisect
import collections
import json
import random
import string
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# (quantile, bytes) pairs measured on the shared real fixtures (see the module docstring).
_Q = (0, .05, .1, .2, .3, .4, .5, .6, .7, .8, .9, .95, .98, .99, .995, .999, 1)
SIZES: dict[str, tuple[int, ...]] = {
    "progress": (549, 585, 592, 623, 629, 631, 634, 634, 637, 652, 672, 2120, 3235, 4891, 5507, 25248, 82287),
    "assistant": (210, 810, 868, 923, 957, 1001, 1049, 1097, 1200, 1462, 2059, 2892, 5004, 7977, 12553, 17361, 29249),
    "tool_result": (227, 629, 689, 817, 1077, 1451, 2121, 3240, 5292, 8737, 19479, 29206, 50480, 60056, 76079,
                    111263, 178091),
    # The top of this table is smoothed: the real sample has only 3 lines over 500 KB (pasted images).
    "prompt": (167, 244, 295, 395, 420, 478, 512, 572, 678, 945, 2919, 9242, 16964, 30000, 200000, 900000, 1046941),
    "system": (413, 447, 447, 447, 452, 481, 505, 510, 525, 568, 761, 788, 855, 2078, 2240, 2240, 2240),
    "file-history-snapshot": (236, 236, 236, 236, 367, 708, 921, 1304, 1716, 2180, 2827, 3204, 3488, 3630, 3784,
                              3784, 3784),
    "attachment": (329, 423, 550, 701, 703, 707, 707, 708, 719, 724, 757, 2120, 2216, 6117, 6117, 6117, 6117),
    "queue-operation": (138, 138, 139, 139, 139, 139, 156, 200, 423, 580, 619, 3163, 10810, 10810, 10810, 10810,
                        10810),
}
# Lines per assistant response (one message.id), measured: counts of responses with 1..10 lines.
SPLITS = (701, 863, 190, 85, 13, 10, 8, 2, 1, 2)
# Models by share of assistant lines, measured.
MODELS = (("claude-opus-4-6", 1382), ("claude-sonnet-4-5-20250929", 614), ("claude-haiku-4-5-20251001", 501),
          ("claude-sonnet-4-20250514", 490), ("claude-opus-4-7", 213), ("claude-opus-4-5-20251101", 198),
          ("claude-opus-4-20250514", 104), ("claude-opus-4-1-20250805", 23))
HOOKS = ("PreToolUse", "PostToolUse", "SessionStart", "Stop", "UserPromptSubmit")
TOOLS = ("Bash", "Read", "Edit", "Write", "Grep", "Glob", "Task", "TodoWrite", "WebFetch")
END = 1_793_000_000.0  # 2026-10-25: the newest activity; sessions spread over the 120 days before it
DAYS = 120
SUBAGENT_SHARE = 0.16
_B62 = string.digits + string.ascii_letters


def _words(rng: random.Random) -> str:
    """A pool of text to pad fields with: words only, so its JSON length is its length."""
    syll = ["ka", "ro", "mi", "te", "su", "lo", "na", "vi", "de", "po", "ra", "xu", "be", "zo", "fi", "qu"]
    vocab = ["".join(rng.choice(syll) for _ in range(rng.randint(1, 4))) for _ in range(3000)]
    vocab += ["def", "return", "import", "self", "None", "error", "test", "file", "function", "class", "sqlite",
              "session", "daemon", "index", "query", "value", "path", "config", "const", "async", "await"] * 20
    parts: list[str] = []
    n = 0
    while n < (1 << 21):
        w = rng.choice(vocab)
        parts.append(w)
        n += len(w) + 1
    return " ".join(parts)


def _quantile_size(rng: random.Random, table: tuple[int, ...]) -> int:
    u = rng.random()
    i = min(bisect.bisect_right(_Q, u), len(_Q) - 1)
    q0, q1 = _Q[i - 1], _Q[i]
    s0, s1 = table[i - 1], table[i]
    return int(s0 + (s1 - s0) * ((u - q0) / (q1 - q0) if q1 > q0 else 0))


@dataclass
class Session:
    project: str
    session_id: str
    cwd: str
    branch: str
    model: str
    t: float
    agent_id: str | None = None
    slug: str = ""
    last_uuid: str | None = None
    path: Path = field(default_factory=Path)


class LineMaker:
    """Makes transcript lines of each kind with realistic shapes and sizes."""

    def __init__(self, seed: int = 0) -> None:
        self.rng = random.Random(seed)
        self.pool = _words(random.Random(seed ^ 0x5EED))
        self.models = [m for m, _ in MODELS]
        self.model_w = [w for _, w in MODELS]

    # --- ids ---------------------------------------------------------------------------

    def uuid(self) -> str:
        h = f"{self.rng.getrandbits(128):032x}"
        return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-a{h[17:20]}-{h[20:]}"

    def b62(self, n: int) -> str:
        r = self.rng
        return "".join(r.choice(_B62) for _ in range(n))

    def text(self, n: int) -> str:
        if n <= 0:
            return ""
        if n >= len(self.pool):
            return (self.pool * (n // len(self.pool) + 1))[:n]
        i = self.rng.randrange(0, len(self.pool) - n)
        return self.pool[i : i + n]

    # --- lines -------------------------------------------------------------------------

    def _base(self, s: Session, kind: str) -> dict[str, Any]:
        s.t += self.rng.expovariate(1 / 4.0)  # a few seconds between lines
        ms = int(s.t * 1000)
        ts = f"{_iso(ms // 1000)}.{ms % 1000:03d}Z"
        d: dict[str, Any] = {
            "parentUuid": s.last_uuid, "isSidechain": s.agent_id is not None, "userType": "external",
            "cwd": s.cwd, "sessionId": s.session_id, "version": "2.1.39", "gitBranch": s.branch,
        }
        if s.agent_id:
            d["agentId"] = s.agent_id
        if s.slug:
            d["slug"] = s.slug
        d["type"] = kind
        d["_ts"] = ts
        return d

    def _finish(self, s: Session, d: dict[str, Any], size: int, pad: list[Any], key: Any) -> str:
        """Serialise ``d`` with ``pad[key]`` grown so the line is about ``size`` bytes."""
        ts = d.pop("_ts", None)
        u = None
        if ts is not None:
            u = self.uuid()
            d["uuid"] = u
            d["timestamp"] = ts
        line = json.dumps(d, separators=(",", ":"), ensure_ascii=False)
        extra = size - len(line) - 1
        if extra > 0:
            pad[key] = pad[key] + self.text(extra)
            line = json.dumps(d, separators=(",", ":"), ensure_ascii=False)
        if u is not None:
            s.last_uuid = u
        return line

    def progress(self, s: Session) -> str:
        size = _quantile_size(self.rng, SIZES["progress"])
        d = self._base(s, "progress")
        tool = f"toolu_01{self.b62(22)}"
        if size > 700:
            data: dict[str, Any] = {"type": "bash_progress", "output": "", "fullOutput": "",
                                    "elapsedTimeSeconds": self.rng.randint(1, 60), "totalLines": 5,
                                    "timeoutMs": 120000}
            key = "output"
        else:
            hook = self.rng.choice(HOOKS)
            data = {"type": "hook_progress", "hookEvent": hook, "hookName": f"{hook}:{self.rng.choice(TOOLS)}",
                    "command": "/home/USER/.claude/hooks/"}
            key = "command"
        d["data"] = data
        d["parentToolUseID"] = tool
        d["toolUseID"] = tool
        return self._finish(s, d, size, data, key)

    def assistant(self, s: Session) -> list[str]:
        """One response, split over several lines sharing message.id and requestId."""
        r = self.rng
        n = r.choices(range(1, len(SPLITS) + 1), SPLITS)[0]
        mid, req = f"msg_01{self.b62(22)}", f"req_011C{self.b62(18)}"
        inp, cc, cr = r.randint(1, 40), r.randint(0, 30000), r.randint(0, 150000)
        out_final = r.randint(20, 4000)
        lines = []
        for k in range(n):
            last = k == n - 1
            size = _quantile_size(r, SIZES["assistant"])
            kind = r.choice(("thinking", "text", "tool_use")) if not last else r.choice(("text", "tool_use"))
            if kind == "tool_use":
                block: dict[str, Any] = {"type": "tool_use", "id": f"toolu_01{self.b62(22)}",
                                         "name": r.choice(TOOLS), "input": {"command": ""}}
                pad, key = block["input"], "command"
            elif kind == "thinking":
                block = {"type": "thinking", "thinking": "", "signature": self.b62(40)}
                pad, key = block, "thinking"
            else:
                block = {"type": "text", "text": ""}
                pad, key = block, "text"
            out = out_final if last else max(1, out_final * (k + 1) // (n + 1))
            msg = {"model": s.model, "id": mid, "type": "message", "role": "assistant", "content": [block],
                   "stop_reason": ("tool_use" if kind == "tool_use" else "end_turn") if last else None,
                   "stop_sequence": None,
                   "usage": {"input_tokens": inp, "cache_creation_input_tokens": cc, "cache_read_input_tokens": cr,
                             "cache_creation": {"ephemeral_5m_input_tokens": 0, "ephemeral_1h_input_tokens": cc},
                             "output_tokens": out, "service_tier": "standard"}}
            d = self._base(s, "assistant")
            d["message"] = msg
            d["requestId"] = req
            # the type key stays where Claude Code writes it for assistant lines: after requestId
            d["type"] = d.pop("type")
            lines.append(self._finish(s, d, size, pad, key))
        return lines

    def tool_result(self, s: Session) -> str:
        size = _quantile_size(self.rng, SIZES["tool_result"])
        d = self._base(s, "user")
        block = {"tool_use_id": f"toolu_01{self.b62(22)}", "type": "tool_result", "content": "", "is_error": False}
        d["message"] = {"role": "user", "content": [block]}
        d["toolUseResult"] = {"stdout": "", "stderr": "", "interrupted": False}
        return self._finish(s, d, size, block, "content")

    def prompt(self, s: Session) -> str:
        size = _quantile_size(self.rng, SIZES["prompt"])
        d = self._base(s, "user")
        if size > 100_000:  # a pasted image, as in the real files' largest lines
            block: dict[str, Any] = {"type": "image", "source": {"type": "base64", "media_type": "image/png",
                                                                 "data": ""}}
            content: list[Any] = [{"type": "text", "text": "what is wrong in this screenshot?"}, block]
            pad, key = block["source"], "data"
        else:
            block = {"type": "text", "text": ""}
            content = [block]
            pad, key = block, "text"
        d["message"] = {"role": "user", "content": content}
        return self._finish(s, d, size, pad, key)

    def system(self, s: Session) -> str:
        d = self._base(s, "system")
        d.update(subtype="compact_boundary", content="", isMeta=False, level="info",
                 compactMetadata={"trigger": "auto", "preTokens": self.rng.randint(100000, 190000)})
        return self._finish(s, d, _quantile_size(self.rng, SIZES["system"]), d, "content")

    def attachment(self, s: Session) -> str:
        d = self._base(s, "attachment")
        d["attachment"] = {"type": "todo_reminder", "content": ""}
        return self._finish(s, d, _quantile_size(self.rng, SIZES["attachment"]), d["attachment"], "content")

    def snapshot(self, s: Session) -> str:
        """A file-history-snapshot line: no uuid, no sessionId."""
        mid = self.uuid()
        d: dict[str, Any] = {"type": "file-history-snapshot", "messageId": mid,
                             "snapshot": {"messageId": mid, "trackedFileBackups": {"_": ""},
                                          "timestamp": f"{_iso(int(s.t))}.000Z"},
                             "isSnapshotUpdate": False}
        return self._finish(s, d, _quantile_size(self.rng, SIZES["file-history-snapshot"]),
                            d["snapshot"]["trackedFileBackups"], "_")

    def queue_op(self, s: Session) -> str:
        d = {"type": "queue-operation", "operation": "enqueue", "timestamp": f"{_iso(int(s.t))}.000Z",
             "sessionId": s.session_id, "content": ""}
        return self._finish(s, d, _quantile_size(self.rng, SIZES["queue-operation"]), d, "content")

    def summary(self, s: Session) -> str:
        """A summary line: no uuid, no timestamp."""
        d = {"type": "summary", "summary": self.text(self.rng.randint(40, 110)).strip().capitalize(),
             "leafUuid": self.uuid()}
        return json.dumps(d, separators=(",", ":"))

    def turn(self, s: Session) -> list[str]:
        """One assistant response and what surrounds it, in the measured proportions."""
        r = self.rng
        out: list[str] = []
        if r.random() < 0.19:
            out.append(self.prompt(s))
        if r.random() < 0.09:
            out.append(self.snapshot(s))
        out.extend(self.assistant(s))
        for _ in range(r.choices(range(9), (12, 6, 8, 12, 18, 16, 12, 9, 7))[0]):
            out.append(self.progress(s))
        out.append(self.tool_result(s))
        if r.random() < 0.26:
            out.append(self.tool_result(s))
        if r.random() < 0.1:
            out.append(self.system(s))
        if r.random() < 0.033:
            out.append(self.attachment(s))
        if r.random() < 0.022:
            out.append(self.queue_op(s))
        return out


def _iso(sec: int) -> str:
    import time

    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(sec))


@dataclass
class Corpus:
    root: Path
    files: list[Path]
    lines: int
    bytes: int


def write_corpus(path: Path | str, size_mb: float, files: int | None = None, seed: int = 0) -> Corpus:
    """Write about ``size_mb`` MB (10^6 bytes) of transcripts into ``path`` (a projects/ folder).

    ``files`` defaults to 3 per MB (1 GB: 3,000 files, as in issue 4's target). About 16 % of
    them are subagent files of a main session. Deterministic for a given (size, files, seed).
    """
    root = Path(path)
    mk = LineMaker(seed)
    r = mk.rng
    n_files = max(1, files if files is not None else round(size_mb * 3))
    n_sub = int(n_files * SUBAGENT_SHARE) if n_files > 2 else 0
    n_main = n_files - n_sub
    n_projects = max(1, round(n_main ** 0.5 / 1.5))
    projects = [f"-home-user-src-{mk.text(12).replace(' ', '-').strip('-') or 'p'}-{i}" for i in range(n_projects)]
    proj_w = [1 / (i + 1) for i in range(n_projects)]
    sessions: list[Session] = []
    for _ in range(n_main):
        p = r.choices(projects, proj_w)[0]
        model = r.choices(mk.models, mk.model_w)[0]
        s = Session(project=p, session_id=mk.uuid(), cwd="/" + p.replace("-", "/").strip("/"), branch="main",
                    model=model, t=END - r.random() * DAYS * 86400,
                    slug="-".join(mk.text(30).split()[:3]) if r.random() < 0.7 else "")
        s.path = root / p / f"{s.session_id}.jsonl"
        sessions.append(s)
    subs: list[Session] = []
    for _ in range(n_sub):
        parent = r.choice(sessions)
        s = Session(project=parent.project, session_id=parent.session_id, cwd=parent.cwd, branch=parent.branch,
                    model=r.choices(mk.models, mk.model_w)[0], t=parent.t + r.random() * 3600,
                    agent_id=f"a{r.getrandbits(28):07x}")
        s.path = root / parent.project / parent.session_id / "subagents" / f"agent-{s.agent_id}.jsonl"
        subs.append(s)
    everyone = sessions + subs
    # Lognormal shares of the bytes: a few big sessions, many small ones; subagents smaller.
    weights = [r.lognormvariate(0, 1.0) * (0.3 if s.agent_id else 1.0) for s in everyone]
    total_w = sum(weights)
    budget = size_mb * 1_000_000
    n_lines = 0
    n_bytes = 0
    written: list[Path] = []
    for s, w in zip(everyone, weights):
        # Each file gets its share of what is left, so overshoots (whole turns, huge lines) even out.
        want = max(0.0, budget - n_bytes) * w / total_w
        total_w -= w
        out: list[str] = []
        size = 0
        if not s.agent_id:
            for _ in range(r.choices((0, 1, 2), (70, 20, 10))[0]):
                out.append(mk.summary(s))
        while True:  # at least one turn: Claude Code never leaves a transcript empty
            for line in mk.turn(s):
                out.append(line)
                size += len(line.encode()) + 1
            if size >= want:
                break
        data = ("\n".join(out) + "\n").encode()
        s.path.parent.mkdir(parents=True, exist_ok=True)
        s.path.write_bytes(data)
        n_lines += len(out)
        n_bytes += len(data)
        written.append(s.path)
    return Corpus(root=root, files=written, lines=n_lines, bytes=n_bytes)


def measure(root: Path | str) -> dict[str, Any]:
    """Line-size distribution and type mix of every ``*.jsonl`` under ``root``."""
    sizes: list[int] = []
    types: collections.Counter[str] = collections.Counter()
    files = sub = 0
    for p in Path(root).rglob("*.jsonl"):
        files += 1
        sub += "subagents" in p.parts
        for line in p.read_bytes().split(b"\n"):
            if not line:
                continue
            sizes.append(len(line) + 1)
            try:
                t = json.loads(line).get("type")
            except (ValueError, AttributeError):
                t = "<bad>"
            types[str(t)] += 1
    sizes.sort()
    n = len(sizes) or 1

    def q(f: float) -> int:
        return sizes[min(len(sizes) - 1, int(f * len(sizes)))] if sizes else 0

    return {
        "files": files, "subagent_files": sub, "lines": len(sizes), "bytes": sum(sizes),
        "median": q(.5), "mean": round(sum(sizes) / n), "p90": q(.9), "p99": q(.99), "p999": q(.999),
        "max": sizes[-1] if sizes else 0, "over_500k": sum(s > 500_000 for s in sizes),
        "types": {t: round(c / n, 4) for t, c in types.most_common()},
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("out", type=Path, help="the projects/ folder to write into (or, with --measure, to read)")
    ap.add_argument("--size-mb", type=float, default=100.0)
    ap.add_argument("--files", type=int, default=None, help="number of files (default: 3 per MB)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--measure", action="store_true", help="only measure the transcripts under OUT")
    a = ap.parse_args(argv)
    if a.measure:
        print(json.dumps(measure(a.out), indent=2))
        return 0
    if a.out.exists() and any(a.out.iterdir()):
        print(f"corpus: {a.out} is not empty; refusing to mix corpora", file=sys.stderr)
        return 2
    c = write_corpus(a.out, a.size_mb, a.files, a.seed)
    print(f"wrote {len(c.files)} files, {c.lines} lines, {c.bytes / 1e6:.1f} MB into {c.root}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
