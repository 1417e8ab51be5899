# Baseline for benchmarks/bench_reference.py: the KFM v11.2.2 control-plane blueprint's own
# "HTTP Change-Detection Seed" (section "Reference Implementation"), copied verbatim below this
# header. It is the spec's baseline, kept exactly as published: do not fix, reformat or lint it.
# ruff: noqa
# fmt: off
# http-change-detection.py
import os, sys, requests, pandas as pd

u = os.getenv("SRC") or (sys.argv[1] if len(sys.argv) > 1 else None)
if not u:
    print("Usage: SRC=<url> python http-change-detection.py (or python http-change-detection.py <url>)")
    sys.exit(2)

os.makedirs(".state", exist_ok=True)
s = ".state/last_modified.txt"
ims = open(s).read().strip() if os.path.exists(s) else None
headers = {"If-Modified-Since": ims} if ims else {}

r = requests.get(u, headers=headers, timeout=30)
if r.status_code == 304:
    sys.exit(0)
r.raise_for_status()

last_mod = r.headers.get("Last-Modified", "")
df = pd.DataFrame(r.json())
assert not df.empty, "Upstream returned 0 rows"

os.makedirs(".wal", exist_ok=True)
tmp = ".wal/out.parquet"
dst = "out/data.parquet"
os.makedirs("out", exist_ok=True)

df.to_parquet(tmp)
os.replace(tmp, dst)

open(s, "w").write(last_mod)
print("ok")
