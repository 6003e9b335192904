"""UMAP on a fresh machine: pynndescent compiled at umap-learn's import against when NN-descent needs it.

    python benchmarks/umap_import.py [--n 1000] [--nn 6000]

umap-learn imports pynndescent, whose functions with declared signatures numba compiles as they
are defined, even where neighbours are computed exactly and pynndescent never runs
(``pipeline.reducers.numba_disk_cache`` defers them; ``_compile_deferred`` compiles them,
exactly as at import, before a fit with NN-descent). Every arm is a fresh ``python -c``
process with an empty ``NUMBA_CACHE_DIR`` of its own, one after the other, timed from outside
(wall) and by its own CPU clock:

- ``import umap`` as umap-learn ships (eager), and inside ``numba_disk_cache`` (deferred);
- the first ``embed(x, "umap")`` of ``--n`` points of a new machine (exact neighbours), then a
  second process on the cache it wrote: the default run's path;
- NN-descent (``pynndescent.NNDescent``, and UMAP on ``--nn`` points, Euclidean and cosine):
  eager, and deferred then compiled; the neighbour graphs' and maps' hashes must be equal.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import bench_env, cli, load_average, machine, versions, write_json  # noqa: E402

_CLOCK = "import json, time; _cpu0 = time.process_time()\n"
_REPORT = "print(json.dumps({**out, 'cpu': time.process_time() - _cpu0}))\n"

IMPORT_EAGER = _CLOCK + "import umap\nout = {}\n" + _REPORT
IMPORT_DEFERRED = _CLOCK + """
from pipeline.reducers import _DEFERRED, numba_disk_cache
with numba_disk_cache():
    import umap
out = {"deferred": len(_DEFERRED)}
""" + _REPORT
FIRST_FIT = _CLOCK + """
import numpy as np
from pipeline.reducers import embed
x = np.random.default_rng(0).normal(size=(N_POINTS, 50))
out = {"head": embed(x, "umap", seed=0).coords[:2].tolist()}
""" + _REPORT
NN_DESCENT = _CLOCK + """
import hashlib
import numpy as np
from pipeline import reducers
if DEFERRED:
    with reducers.numba_disk_cache():
        import umap
    reducers._compile_deferred()
else:
    import umap
from pynndescent import NNDescent

def md5(a):
    return hashlib.md5(np.ascontiguousarray(a).tobytes()).hexdigest()[:12]

out = {}
x = np.random.default_rng(0).standard_normal((N_POINTS, 20)).astype(np.float32)
for metric in ("euclidean", "cosine"):
    indices, distances = NNDescent(x, n_neighbors=15, metric=metric, random_state=0, n_jobs=1).neighbor_graph
    coords = umap.UMAP(n_neighbors=15, metric=metric, random_state=0, n_epochs=50).fit_transform(x)
    out[metric] = [md5(indices), md5(distances), md5(coords)]
""" + _REPORT


def _process(code: str, cache: Path) -> dict[str, Any]:
    env = bench_env(NUMBA_CACHE_DIR=str(cache), PYTHONWARNINGS="ignore")
    started = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=3600)
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(f"benchmark process failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return {**json.loads(proc.stdout.strip().splitlines()[-1]), "wall": wall}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    def add(p):
        p.add_argument("--n", type=int, default=1000, help="points of the first-fit arm (exact neighbours)")
        p.add_argument("--nn", type=int, default=6000, help="points of the NN-descent arm (above 4,096: "
                                                              "umap-learn searches with pynndescent)")
    args = cli(__doc__, add, argv)
    load_before = load_average()[0]
    rows: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="umap-import-") as tmp:
        def fresh(name: str) -> Path:
            folder = Path(tmp) / name
            shutil.rmtree(folder, ignore_errors=True)
            return folder

        rows["import umap, eager"] = _process(IMPORT_EAGER, fresh("eager"))
        rows["import umap, deferred"] = _process(IMPORT_DEFERRED, fresh("deferred"))
        fit = FIRST_FIT.replace("N_POINTS", str(args.n))
        rows["first fit, new machine"] = _process(fit, fresh("fit"))
        rows["first fit, second process"] = _process(fit, Path(tmp) / "fit")
        nn = NN_DESCENT.replace("N_POINTS", str(args.nn))
        rows["NN-descent, eager"] = _process(nn.replace("DEFERRED", "False"), fresh("nn-eager"))
        rows["NN-descent, deferred"] = _process(nn.replace("DEFERRED", "True"), fresh("nn-deferred"))
    same_maps = rows["first fit, new machine"]["head"] == rows["first fit, second process"]["head"]
    same_nn = all(rows["NN-descent, eager"][m] == rows["NN-descent, deferred"][m] for m in ("euclidean", "cosine"))

    where = machine()
    print(f"UMAP on a fresh machine (empty numba cache per arm); {where['cpu']}, {where['cores']} cores; "
          f"load {load_before:.1f} -> {load_average()[0]:.1f}")
    print(f"{'arm':34s} {'wall s':>8s} {'cpu s':>8s}")
    for name, row in rows.items():
        print(f"{name:34s} {row['wall']:8.1f} {row['cpu']:8.1f}")
    eager, deferred = rows["import umap, eager"], rows["import umap, deferred"]
    print(f"import umap eager / deferred: {eager['wall'] / deferred['wall']:.1f}x "
          f"({deferred['deferred']} pynndescent functions deferred)")
    print(f"first fit: new machine / second process {rows['first fit, new machine']['wall']:.1f} / "
          f"{rows['first fit, second process']['wall']:.1f} s; same map: {same_maps}")
    print(f"NN-descent, neighbour graphs and maps eager == deferred: {same_nn} "
          f"(euclidean {rows['NN-descent, deferred']['euclidean']}, cosine {rows['NN-descent, deferred']['cosine']})")
    result = {"machine": where, "versions": versions(), "n": args.n, "nn": args.nn, "rows": rows,
              "same_maps": same_maps, "same_nn_descent": same_nn}
    write_json(args.json, result)
    return result


if __name__ == "__main__":
    main()
