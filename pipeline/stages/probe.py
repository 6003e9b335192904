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
from pipeline.probes import knn_in_layer, linear_probe
from pipeline.runtime import limit_threads, log, progress

__all__ = ["run"]


def run(params: Params) -> dict[str, Any]:
    """The probe stage: every layer of data/activations -> metrics/probes.json."""
    cfg = params.probe
    act = paths.ACTIVATIONS
    with artifacts.stage_outputs(paths.PROBE_METRICS):
        index = artifacts.load_layer_index(act)
        memory.check_layers("probe", index)       # before anything is written (pipeline.memory)
        labels = artifacts.load_labels(act / "labels.npy", len(index["classes"]))
        limit_threads(len(labels))                 # small inputs: one thread is faster (runtime.limit_threads)
        names = [row["name"] for row in index["layers"]]
        results: dict[str, Any] = {}
        not_converged = []
        bar = progress(names, desc="probe", unit="layer")
        for name in bar:
            bar.set_postfix_str(name, refresh=False)
            x = artifacts.load_rows(act / f"{name}.npy", len(labels))
            result = linear_probe(x, labels, test_fraction=cfg.test_fraction, C=cfg.C, max_iter=cfg.max_iter,
                                  max_dims=cfg.max_dims, seed=cfg.seed)
            if "skipped" in result:
                log(f"warning: probe: layer {name} skipped: {result['skipped']}")
                results[name] = result
                continue
            if not result.pop("converged"):
                not_converged.append(name)
            results[name] = {**result, **knn_in_layer(x, labels, k=cfg.knn_k, seed=cfg.seed)}
        if not_converged:
            log(f"warning: probe: the logistic regression did not converge in probe.max_iter = {cfg.max_iter} "
                f"iterations for {', '.join(not_converged)}; raise probe.max_iter for exact figures")
        artifacts.save_json(paths.PROBE_METRICS, results)
    summary = ", ".join(f"{k} {v['accuracy']:.3f}" for k, v in results.items() if "accuracy" in v)
    log(f"probe: {summary}")
    return results
