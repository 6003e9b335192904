"""export stage: the trained model as ONNX and TorchScript, checked against PyTorch on the test split.

Writes ``data/export/``:

- ``model.onnx``: input ``input`` float32 (batch, C, H, W), already normalised; output ``logits``
  (classifiers, (batch, K)) or ``reconstruction`` (autoencoders: the full model, (batch, C, H, W) in
  the same normalised units). The batch axis is dynamic. Exported with the TorchScript-based
  ONNX exporter (``dynamo=False``): it needs only ``onnx``, while the newer dynamo exporter
  (torch's default since 2.9) also needs ``onnxscript``.
- ``model.torchscript.pt``: the same function traced with ``torch.jit.trace`` (load with
  ``torch.jit.load``; no Python class needed).
- ``export.json``: input shape, normalisation mean/std, class names, output name, files and how
  to call them.

Then every exported model runs on the whole test split (uint8 -> normalised float, batches) and
is compared with the PyTorch model: ``metrics/export.json`` holds, per format, the largest
absolute output difference and (classifiers) the share of identical argmax predictions.
"""

from __future__ import annotations

import contextlib
import importlib
import inspect
import warnings
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch

from pipeline import artifacts, paths
from pipeline.config import Params
from pipeline.datasets import load_prepared
from pipeline.errors import UserError
from pipeline.models import load_meta, load_model
from pipeline.models.common import Network
from pipeline.runtime import log, normalized_batches, normalizer, progress

__all__ = ["run", "export_onnx", "export_torchscript", "compare_outputs", "ONNX_FILE", "TORCHSCRIPT_FILE",
           "INFO_FILE", "INSTALL_HINT"]

ONNX_FILE = "model.onnx"
TORCHSCRIPT_FILE = "model.torchscript.pt"
INFO_FILE = "export.json"
INSTALL_HINT = "pip install onnx onnxruntime"
_BATCH = 256


@contextlib.contextmanager
def _quiet_exporters() -> Iterator[None]:
    """torch 2.9+ marks torch.jit and the TorchScript-based ONNX exporter deprecated; both still
    work, and the notices would be printed on every run."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", category=FutureWarning)
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", message=".*legacy TorchScript-based ONNX export.*")
        yield


def _missing_onnx_packages() -> list[str]:
    missing = []
    for name in ("onnx", "onnxruntime"):
        try:
            importlib.import_module(name)
        except ImportError:
            missing.append(name)
    return missing


def export_onnx(model: Network, example: torch.Tensor, path: Path, *, output_name: str, opset: int) -> None:
    """Write ``model`` (eval mode, CPU) as ONNX with a dynamic batch axis; checked with onnx.checker."""
    import onnx

    kwargs: dict[str, Any] = dict(input_names=["input"], output_names=[output_name], opset_version=opset,
                                  dynamic_axes={"input": {0: "batch"}, output_name: {0: "batch"}},
                                  do_constant_folding=True)
    if "dynamo" in inspect.signature(torch.onnx.export).parameters:
        kwargs["dynamo"] = False                    # the TorchScript-based exporter: no onnxscript needed
    with artifacts.atomic_path(path) as tmp, _quiet_exporters():
        torch.onnx.export(model, (example,), str(tmp), **kwargs)
        onnx.checker.check_model(onnx.load(str(tmp)))


def export_torchscript(model: Network, example: torch.Tensor, path: Path) -> None:
    """Trace ``model`` (eval mode, CPU) on ``example`` and save it with torch.jit.save.

    Saved into memory, then written: given a file name, torch.jit.save names the archive's top
    folder after the (temporary, random) file, so the same model would give other bytes every run;
    into a buffer the folder is always ``archive``. The trace's debug records (``*.debug_pkl``: the
    Python call stack of every traced operation, with the absolute paths of this checkout and of
    torch's install) are left out, then the archive is loaded and saved again, so its bytes (and
    torch's content-derived ``serialization_id``) are the same wherever the project lives. They
    only serve TorchScript's own error messages; the archive loads and runs without them."""
    import io
    import zipfile

    traced, stripped, buffer = io.BytesIO(), io.BytesIO(), io.BytesIO()
    with _quiet_exporters():
        torch.jit.save(torch.jit.trace(model, example, check_trace=False), traced)
        with zipfile.ZipFile(traced) as full, zipfile.ZipFile(stripped, "w", zipfile.ZIP_STORED) as out:
            for entry in full.infolist():
                if not entry.filename.endswith(".debug_pkl"):
                    out.writestr(entry, full.read(entry))
        stripped.seek(0)
        torch.jit.save(torch.jit.load(stripped), buffer)
    artifacts.write_bytes(path, buffer.getvalue())


def _batched(fn: Callable[[torch.Tensor], np.ndarray], images: np.ndarray, normalize: Callable, desc: str) -> np.ndarray:
    """Run ``fn`` on normalised batches of uint8 ``images`` (N, C, H, W); concatenated float32 outputs."""
    batches = normalized_batches(images, normalize, _BATCH)
    parts = [np.asarray(fn(x), dtype=np.float32)
             for _, x in progress(batches, total=-(-len(images) // _BATCH), desc=desc, unit="batch", leave=False)]
    return np.concatenate(parts)


def compare_outputs(reference: np.ndarray, other: np.ndarray, task: str) -> dict[str, float]:
    """``max_abs_diff`` of two output arrays (same shape) and, for classifiers, the share of rows
    whose argmax agrees (``argmax_agreement``) and how many do not (``argmax_mismatches``)."""
    if reference.shape != other.shape:
        raise UserError(f"exported model returned shape {other.shape}, PyTorch {reference.shape}; "
                        f"rerun `dvc repro export`")
    out = {"max_abs_diff": float(np.abs(reference.astype(np.float64) - other).max()) if reference.size else 0.0}
    if task == "classify":
        same = reference.argmax(axis=1) == other.argmax(axis=1)
        out["argmax_agreement"] = float(same.mean()) if len(same) else 1.0
        out["argmax_mismatches"] = int((~same).sum())
    return out


def _how_to_call(task: str, output_name: str, shape: list[int]) -> dict[str, str]:
    norm = "x = (uint8_images / 255 - mean) / std  # per channel, shape (N, %d, %d, %d), float32" % tuple(shape)
    after = ("argmax over axis 1 = class index into `classes`" if task == "classify" else
             "pixels = clip(reconstruction * std + mean, 0, 1) per channel")
    return {
        "normalise": norm,
        "onnxruntime": f"onnxruntime.InferenceSession('{ONNX_FILE}').run(['{output_name}'], {{'input': x}})[0]",
        "torchscript": f"torch.jit.load('{TORCHSCRIPT_FILE}')(torch.from_numpy(x))",
        "output": after,
    }


def run(params: Params) -> dict[str, Any]:
    cfg = params.export
    formats = list(dict.fromkeys(cfg.formats))
    if "onnx" in formats:
        missing = _missing_onnx_packages()
        if missing:
            raise UserError(f"ONNX export needs {' and '.join(missing)} (not installed): run `{INSTALL_HINT}` "
                            f"(or set export.formats: [torchscript])")
    out = paths.EXPORT
    with artifacts.stage_outputs(out, paths.EXPORT_METRICS):
        load_meta(paths.MODEL)                              # every key read below, checked
        model, meta = load_model(paths.MODEL)
        model.to("cpu").eval()
        data = load_prepared(paths.PREPARED)
        task = meta.get("task", model.task)
        output_name = "logits" if task == "classify" else "reconstruction"
        shape = [int(s) for s in meta["input_shape"]]
        if list(data.test_images.shape[1:]) != shape:
            raise UserError(f"data/prepared test images are {tuple(data.test_images.shape[1:])}, the model expects "
                            f"{tuple(shape)}; rerun `dvc repro` so data and model match")
        normalize = normalizer(meta["mean"], meta["std"], "cpu")
        example = normalize(torch.from_numpy(np.ascontiguousarray(data.test_images[:2])))    # (2, C, H, W)

        with torch.inference_mode():
            reference = _batched(lambda x: model(x).numpy(), data.test_images, normalize, "pytorch")
        metrics: dict[str, Any] = {"n_test": int(len(reference))}
        files: dict[str, str] = {}
        if "onnx" in formats:
            import onnxruntime as ort

            export_onnx(model, example, out / ONNX_FILE, output_name=output_name, opset=cfg.opset)
            session = ort.InferenceSession(str(out / ONNX_FILE), providers=["CPUExecutionProvider"])
            got = _batched(lambda x: session.run([output_name], {"input": x.numpy()})[0],
                           data.test_images, normalize, "onnxruntime")
            metrics["onnx"] = {**compare_outputs(reference, got, task), "opset": cfg.opset}
            files["onnx"] = ONNX_FILE
        if "torchscript" in formats:
            export_torchscript(model, example, out / TORCHSCRIPT_FILE)
            with _quiet_exporters():
                loaded = torch.jit.load(str(out / TORCHSCRIPT_FILE), map_location="cpu")
            with torch.inference_mode():
                got = _batched(lambda x: loaded(x).numpy(), data.test_images, normalize, "torchscript")
            metrics["torchscript"] = compare_outputs(reference, got, task)
            files["torchscript"] = TORCHSCRIPT_FILE

        info = {
            "arch": meta["arch"], "task": task, "dataset": meta.get("dataset"),
            "input": {"name": "input", "shape": ["batch", *shape], "dtype": "float32", "layout": "NCHW"},
            "output": {"name": output_name,
                       "shape": ["batch", len(meta["classes"])] if task == "classify" else ["batch", *shape]},
            "mean": meta["mean"], "std": meta["std"], "classes": meta["classes"],
            "files": files, "opset": cfg.opset if "onnx" in formats else None,
            "how_to_call": _how_to_call(task, output_name, shape),
        }
        artifacts.save_json(out / INFO_FILE, info)
        artifacts.save_json(paths.EXPORT_METRICS, metrics)
    for fmt in formats:
        m = metrics[fmt]
        agree = f", argmax agrees on {m['argmax_agreement']:.2%}" if "argmax_agreement" in m else ""
        log(f"{fmt}: max |difference| to PyTorch {m['max_abs_diff']:.2e} on {metrics['n_test']} test images{agree}")
        if m.get("argmax_mismatches"):
            log(f"warning: {fmt}: {m['argmax_mismatches']} test images get another class than in PyTorch")
    log(f"exported {', '.join(files.values())} + {INFO_FILE} -> {out}")
    return metrics
