"""fetch stage: load the configured dataset and write data/prepared (uint8 images, labels, info.json).

Which datasets exist and how each is read lives in :mod:`pipeline.datasets` (``LOADERS``).
"""

from __future__ import annotations

from typing import Any

from pipeline import artifacts, paths
from pipeline.config import Params
from pipeline.datasets import fetch, save_prepared
from pipeline.runtime import log

__all__ = ["run"]


def run(params: Params) -> dict[str, Any]:
    with artifacts.stage_outputs(paths.PREPARED):
        data = fetch(params.data)
        save_prepared(paths.PREPARED, data)
    info = data.info
    log(f"prepared {info['dataset']}: {info['n_train']} train / {info['n_test']} test images of shape "
        f"{tuple(info['shape'])}, {len(info['classes'])} classes -> {paths.PREPARED} (from {info['source']})")
    return info
