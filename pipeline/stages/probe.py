"""probe stage: how linearly decodable is the class from each layer? -> ``metrics/probes.json``.

For every extracted layer (:func:`pipeline.probes.linear_probe`): a seeded, stratified split of the extracted subset
(``probe.test_fraction`` held out), features standardised on the training part, layers wider
than ``probe.max_dims`` PCA-reduced (fitted on the training part) to
``min(probe.max_dims, n_train)`` dimensions, then a multinomial logistic regression
(``probe.C``, ``probe.max_iter``). With ``n_train <= max_dims`` the PCA loses nothing the
probe could use: an L2-penalised linear model's weights lie in the span of its training points.

Beside it, the k-nearest-neighbour accuracy in the layer's own space
(:func:`pipeline.probes.knn_in_layer`, ``probe.knn_k``, 5-fold): how well the classes separate
without a linear read-out, the number the maps' own kNN accuracy (``metrics/embeddings``) is
measured against. Computed here once per layer, not once per map method.

``metrics/probes.json``: ``{layer: {"accuracy": held-out accuracy, "dims": features used,
"knn_accuracy": kNN accuracy in the layer[, "knn_sample": points scored when sampled]}}``;
a layer with NaN/inf activations has ``{"skipped": reason}`` instead.
"""

from __future__ import annotations

from typing import Any

from pipeline import artifacts, memory, paths
from pipeline.config import Params
from pipeline.probes import ProbeJob, probe_layer
from pipeline.runtime import collect_jobs, layer_workers, log

__all__ = ["run"]


def run(params: Params) -> dict[str, Any]:
    """The probe stage: every layer of data/activations -> metrics/probes.json."""
    cfg = params.probe
    act = paths.ACTIVATIONS
    with artifacts.stage_outputs(paths.PROBE_METRICS):
        index = artifacts.load_layer_index(act)
        memory.check_layers("probe", index)       # before anything is written (pipeline.memory)
        labels = artifacts.load_labels(act / "labels.npy", len(index["classes"]))
        names = [row["name"] for row in index["layers"]]
        dims = {row["name"]: int(row.get("dim") or 0) for row in index["layers"]}
        jobs = sorted((ProbeJob(name, act / f"{name}.npy", labels, test_fraction=cfg.test_fraction, C=cfg.C,
                                max_iter=cfg.max_iter, max_dims=cfg.max_dims, knn_k=cfg.knn_k, seed=cfg.seed)
                       for name in names), key=lambda job: -dims[job.name])     # the widest (longest) first
        # one job per layer, in worker processes from runtime.PARALLEL_FROM points (runtime.layer_workers)
        workers = memory.workers_that_fit("probe", index, layer_workers(len(jobs), len(labels)))
        found = collect_jobs(probe_layer, jobs, [job.name for job in jobs], workers=workers, desc="probe")
        results: dict[str, Any] = {}
        not_converged = []
        for name in names:                         # in layer order, whichever process finished first
            result = found[name]
            if "skipped" in result:
                log(f"warning: probe: layer {name} skipped: {result['skipped']}")
            elif not result.pop("converged"):
                not_converged.append(name)
            results[name] = result
        if not_converged:
            log(f"warning: probe: the logistic regression did not converge in probe.max_iter = {cfg.max_iter} "
                f"iterations for {', '.join(not_converged)}; raise probe.max_iter for exact figures")
        artifacts.save_json(paths.PROBE_METRICS, results)
    summary = ", ".join(f"{k} {v['accuracy']:.3f}" for k, v in results.items() if "accuracy" in v)
    log(f"probe: {summary}")
    return results
