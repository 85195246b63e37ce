"""csmd with a sampler thread: RSS, SQLite heap, glibc mallinfo2, Python blocks every 0.2 s."""
import ctypes, json, os, sys, threading, time
import _sqlite3
lib = ctypes.CDLL(_sqlite3.__file__)
lib.sqlite3_memory_used.restype = ctypes.c_int64
lib.sqlite3_memory_highwater.restype = ctypes.c_int64
lib.sqlite3_memory_highwater.argtypes = [ctypes.c_int]
class MI2(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in ("arena","ordblks","smblks","hblks","hblkhd","usmblks","fsmblks","uordblks","fordblks","keepcost")]
libc = ctypes.CDLL("libc.so.6"); libc.mallinfo2.restype = MI2
out = open(os.environ["PROBE_OUT"], "w", buffering=1)
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
def loop():
    n = 0
    while True:
        n += 1
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
        out.write(json.dumps(rec) + "\n")
        time.sleep(0.2)
threading.Thread(target=loop, daemon=True).start()
from csm.daemon.main import main
sys.argv = ["csmd"]
main()
