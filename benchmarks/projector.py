"""Projector tensor writing: a 10,000 x 4,000 float32 layer (half zeros, like a ReLU layer) as raw
bytes, as our vectorised TSV, and with np.savetxt, side by side.

    python benchmarks/projector.py
"""
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from pipeline.projector import write_tensor

rng = np.random.default_rng(0)
x = rng.standard_normal((10_000, 4_000), dtype=np.float32)
x[rng.random(x.shape) < 0.5] = 0
out = tempfile.mkdtemp()
res = {}
def timed(name, fn):
    w0, c0 = time.perf_counter(), time.process_time(); path = fn()
    res[name] = (time.perf_counter() - w0, time.process_time() - c0)
    print(f"{name:8s} wall {res[name][0]:6.2f} s  cpu {res[name][1]:6.2f} s  {os.path.getsize(path) / 1e6:7.1f} MB", flush=True)
    os.remove(path)
timed("bytes", lambda: write_tensor(f"{out}/a", x, "bytes"))
timed("tsv", lambda: write_tensor(f"{out}/a", x, "tsv"))
def savetxt():
    np.savetxt(f"{out}/s.tsv", x, fmt="%.7g", delimiter="\t"); return f"{out}/s.tsv"
timed("savetxt", savetxt)
print(f"savetxt / tsv: {res['savetxt'][1] / res['tsv'][1]:.1f}x cpu; tsv / bytes: {res['tsv'][1] / res['bytes'][1]:.0f}x cpu")
