"""csmd with a sampler thread: RSS, SQLite heap, glibc mallinfo2, Python blocks every 0.2 s.

With PROBE_DETAIL=1, every second also: each open SQLite connection's page cache, schema and statement
memory (``sqlite3_db_status``; connections found through ``gc``), glibc's arenas one by one (``malloc_info``:
in use and free per arena) and ``/proc/self/smaps_rollup``'s anonymous and file-backed memory. With PROBE_TRACE=1, tracemalloc runs, and
its 30 largest lines are logged whenever the file PROBE_OUT.dump appears (it is deleted). When PROBE_OUT.trim
appears: RSS before and after ``gc.collect()`` and ``malloc_trim(0)``, and Python's obmalloc arenas (only
the arenas when PROBE_OUT.stats appears).
PROBE_TRIM_S=S calls ``malloc_trim(0)`` every S seconds (what a periodic trim inside csmd would give).
"""
import ctypes, gc, json, os, re, sqlite3, sys, tempfile, threading, time
import _sqlite3
lib = ctypes.CDLL(_sqlite3.__file__)
lib.sqlite3_memory_used.restype = ctypes.c_int64
lib.sqlite3_memory_highwater.restype = ctypes.c_int64
lib.sqlite3_memory_highwater.argtypes = [ctypes.c_int]
lib.sqlite3_db_status.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.POINTER(ctypes.c_int),
                                  ctypes.POINTER(ctypes.c_int), ctypes.c_int]
lib.sqlite3_db_filename.restype = ctypes.c_char_p
lib.sqlite3_db_filename.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
class MI2(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in ("arena","ordblks","smblks","hblks","hblkhd","usmblks","fsmblks","uordblks","fordblks","keepcost")]
libc = ctypes.CDLL("libc.so.6"); libc.mallinfo2.restype = MI2
libc.fopen.restype = ctypes.c_void_p
libc.fopen.argtypes = [ctypes.c_char_p, ctypes.c_char_p]
libc.fclose.argtypes = [ctypes.c_void_p]
libc.malloc_info.argtypes = [ctypes.c_int, ctypes.c_void_p]
out = open(os.environ["PROBE_OUT"], "w", buffering=1)
detail = os.environ.get("PROBE_DETAIL") == "1"
trace = os.environ.get("PROBE_TRACE") == "1"
trim_s = float(os.environ.get("PROBE_TRIM_S", "0"))
if trace:
    import tracemalloc
    tracemalloc.start()
t0 = time.monotonic()
if os.environ.get("PROBE_TRACEMALLOC"):  # Python's own blocks by file, every 5 s (costs RSS itself: a separate run)
    import tracemalloc
    tracemalloc.start()
def status():
    d = {}
    for line in open("/proc/self/status"):
        k, _, v = line.partition(":")
        if k in ("VmRSS", "VmHWM", "RssAnon", "RssFile", "Threads"):
            d[k] = int(v.split()[0])
    return d
def connections():
    """(file, cache KB, schema KB, statements KB) of every live sqlite3 connection."""
    rows = []
    for o in gc.get_objects():
        if isinstance(o, sqlite3.Connection):
            db = ctypes.c_void_p.from_address(id(o) + object.__basicsize__).value
            if not db:
                continue
            figs = []
            for op in (1, 2, 3):  # CACHE_USED, SCHEMA_USED, STMT_USED
                cur, hi = ctypes.c_int(), ctypes.c_int()
                lib.sqlite3_db_status(db, op, ctypes.byref(cur), ctypes.byref(hi), 0)
                figs.append(round(cur.value / 1024))
            name = (lib.sqlite3_db_filename(db, b"main") or b"").decode()
            rows.append([type(o).__name__, os.path.basename(name)] + figs)
    return rows
def arenas():
    """[in use MB, free MB] per glibc arena, from malloc_info's XML."""
    path = os.path.join(tempfile.gettempdir(), f"probe-mi-{os.getpid()}.xml")
    fp = libc.fopen(path.encode(), b"w")
    libc.malloc_info(0, fp)
    libc.fclose(fp)
    xml = open(path).read()
    os.unlink(path)
    res = []
    for heap in re.findall(r'<heap nr="\d+">(.*?)</heap>', xml, re.S):
        cur = int(re.search(r'<system type="current" size="(\d+)"', heap).group(1))
        free = sum(int(s) for s in re.findall(r'<total type="(?:fast|rest)" count="\d+" size="(\d+)"', heap))
        res.append([round((cur - free) / 2**20, 1), round(free / 2**20, 1)])
    return res
def rollup():
    d = {}
    for line in open("/proc/self/smaps_rollup"):
        k, _, v = line.partition(":")
        if k in ("Anonymous", "Rss", "Private_Dirty"):
            d[k] = round(int(v.split()[0]) / 1024, 1)
    return d
def loop():
    n = 0
    trimmed = time.monotonic()
    while True:
        if trim_s and time.monotonic() - trimmed >= trim_s:
            libc.malloc_trim(0)
            trimmed = time.monotonic()
        m = libc.mallinfo2()
        s = status()
        rec = dict(t=round(time.monotonic()-t0, 2), rss=s["VmRSS"]/1024, hwm=s["VmHWM"]/1024, anon=s["RssAnon"]/1024,
                   threads=s["Threads"], sqlite=lib.sqlite3_memory_used()/2**20, sqlite_hw=lib.sqlite3_memory_highwater(0)/2**20,
                   arena=m.arena/2**20, inuse=m.uordblks/2**20, free=m.fordblks/2**20, mmapped=m.hblkhd/2**20,
                   pyblocks=sys.getallocatedblocks())
        if os.environ.get("PROBE_TRACEMALLOC") and n % 25 == 1:
            stats = tracemalloc.take_snapshot().statistics("filename")
            rec["traced"] = tracemalloc.get_traced_memory()[0] / 2**20
            rec["top"] = [(str(st.traceback[0].filename).rsplit("site-packages/", 1)[-1], round(st.size / 2**20, 2))
                          for st in stats[:25]]
        if detail and n % 5 == 0:
            rec.update(conns=connections(), arenas=arenas(), smaps=rollup(),
                       threadnames=sorted(t.name for t in threading.enumerate()))
        if trace and os.path.exists(os.environ["PROBE_OUT"] + ".dump"):
            os.unlink(os.environ["PROBE_OUT"] + ".dump")
            snap = tracemalloc.take_snapshot()
            rec["trace_mb"] = round(sum(s.size for s in snap.statistics("filename")) / 2**20, 2)
            rec["trace"] = [[str(s.traceback[0]), round(s.size / 1024), s.count] for s in snap.statistics("lineno")[:30]]
        asked = [x for x in (".trim", ".stats") if os.path.exists(os.environ["PROBE_OUT"] + x)]
        for x in asked:
            os.unlink(os.environ["PROBE_OUT"] + x)
        if ".trim" in asked:
            before = status()["VmRSS"]
            gc.collect()
            mid = status()["VmRSS"]
            libc.malloc_trim(0)
            rec["trim"] = [before / 1024, mid / 1024, status()["VmRSS"] / 1024]
        if asked:
            stats = os.path.join(tempfile.gettempdir(), f"probe-py-{os.getpid()}.txt")
            saved = os.dup(2)
            with open(stats, "w") as f:
                os.dup2(f.fileno(), 2)
                sys._debugmallocstats()
                os.dup2(saved, 2)
            os.close(saved)
            text = open(stats).read()
            os.unlink(stats)
            rec["pymalloc"] = [l for l in text.splitlines() if re.match(r"# (arenas|bytes in)|Total|arenas", l)]
        n += 1
        out.write(json.dumps(rec) + "\n")
        time.sleep(0.2)
threading.Thread(target=loop, daemon=True).start()
from csm.daemon.main import main
sys.argv = ["csmd"]
main()
