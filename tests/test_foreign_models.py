"""Models that are not ours: torchvision:<name>, custom factories, their layers, convert-weights."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from pipeline.config import ModelConfig
from pipeline.errors import ConfigError, UserError
from pipeline.models import build_model, describe_layers, load_weights_into, save_model, select_layers
from tests.conftest import REPO, run_cli


def tv(name: str, shape=(1, 28, 28), **kw) -> nn.Module:
    return build_model(ModelConfig(arch=f"torchvision:{name}", **kw), shape, 10)


def test_resnet18_small_stem_adapted_to_the_data() -> None:
    model = tv("resnet18")
    net = model.net
    assert net.conv1.in_channels == 1 and net.conv1.kernel_size == (3, 3) and net.conv1.stride == (1, 1)
    assert isinstance(net.maxpool, nn.Identity) and net.fc.out_features == 10
    rows = describe_layers(model, (1, 28, 28))
    assert [r["name"] for r in rows] == ["stem", "layer1", "layer2", "layer3", "layer4", "avgpool", "fc"]
    assert [tuple(r["shape"]) for r in rows][:3] == [(64, 28, 28), (64, 28, 28), (128, 14, 14)]
    assert rows[0]["type"] == "stem" and rows[0]["params"] == 64 * 9 + 2 * 64       # conv1 + bn1
    assert {r["ends_with"] for r in rows[:5]} == {"ReLU"} and rows[-1]["ends_with"] == "Linear"
    assert rows[5]["ends_with"] == "AdaptiveAvgPool2d"            # pooling keeps the kind before it
    # the weights file holds torchvision's own key names
    assert "conv1.weight" in model.state_dict() and not any(k.startswith("net.") for k in model.state_dict())


def test_imagenet_stem_keeps_torchvision_downsampling() -> None:
    net = tv("resnet18", shape=(3, 64, 64), stem="imagenet").net
    assert net.conv1.kernel_size == (7, 7) and net.conv1.stride == (2, 2) and isinstance(net.maxpool, nn.MaxPool2d)


@pytest.mark.parametrize("name, first_stride", [("mobilenet_v3_small", (1, 1)), ("efficientnet_b0", (1, 1))])
def test_small_stem_of_mobile_nets(name: str, first_stride: tuple[int, int]) -> None:
    model = tv(name, shape=(3, 32, 32))
    conv = next(m for m in model.net.modules() if isinstance(m, nn.Conv2d))
    assert conv.stride == first_stride and conv.in_channels == 3
    names = [n for n, _ in model.named_layers()]
    assert names[0] == "features.0" and "avgpool" in names and names[-1].startswith("classifier.")
    assert not any(isinstance(m, nn.Dropout) for _, m in model.named_layers())


def test_unknown_torchvision_name_lists_the_closest() -> None:
    with pytest.raises(ConfigError, match=r"^model.arch = torchvision:resnet19: not an image classifier of "
                                          r"torchvision [\d.]+; closest: resnet18, "):
        tv("resnet19")


def test_stem_that_does_not_fit_names_the_key() -> None:
    with pytest.raises(ConfigError, match=r"^model.stem = small: torchvision:alexnet \(AlexNet\) has no small"):
        tv("alexnet")
    with pytest.raises(ConfigError, match=r"^torchvision:vgg11 with model.stem = imagenet does not run on 1x28x28 "
                                          r"images \(RuntimeError: .*\); set model.stem: small$"):
        tv("vgg11", stem="imagenet")


def test_weights_that_do_not_fit_name_the_first_tensor(tmp_path: Path) -> None:
    rgb = tv("resnet18", shape=(3, 32, 32))
    save_model(tmp_path, rgb, {}, write_config=False)
    grey = tv("resnet18", shape=(1, 28, 28))
    with pytest.raises(UserError, match=r"tensor 'conv1.weight' has shape \(64, 3, 3, 3\), the model expects "
                                        r"\(64, 1, 3, 3\)"):
        load_weights_into(grey, tmp_path / "model.safetensors")
    again = tv("resnet18", shape=(3, 32, 32))
    load_weights_into(again, tmp_path / "model.safetensors")
    assert torch.equal(again.net.layer3[0].conv1.weight, rgb.net.layer3[0].conv1.weight)


def test_select_layers_auto_all_and_list() -> None:
    model = tv("resnet18")
    assert [n for n, _ in select_layers(model, "auto")][0] == "stem"
    leaves = [n for n, _ in select_layers(model, "all")]
    assert "layer1.0.conv1" in leaves and "fc" in leaves
    assert "layer1.0.relu" not in leaves                # runs twice per block: no single output
    assert [n for n, _ in select_layers(model, ["layer1.0", "stem"])] == ["layer1.0", "stem"]
    with pytest.raises(ConfigError, match=r"^extract.layers: unknown layer 'layer9'; valid names: input, stem"):
        select_layers(model, ["layer9"])
    lenet = build_model(ModelConfig(), (1, 28, 28), 10)
    assert select_layers(lenet, "all") == select_layers(lenet, "auto") == list(lenet.named_layers())


# ---- custom factories -------------------------------------------------------------------------

_FACTORIES = '''
import torch
from torch import nn

def good(input_shape, n_classes):
    c, h, w = input_shape
    return nn.Sequential(nn.Conv2d(c, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * h * w, n_classes))

def boom(input_shape, n_classes):
    raise ValueError("no such width")

def not_a_module(input_shape, n_classes):
    return 42

def wrong_shape(input_shape, n_classes):
    return nn.Sequential(nn.Flatten(), nn.Linear(input_shape[1] * input_shape[2], 5))
'''


@pytest.fixture
def factory_ws(workspace: Path) -> Path:
    (workspace / "models").mkdir()
    (workspace / "models" / "nets.py").write_text(_FACTORIES)
    return workspace


def _layers_with(ws: Path, factory: str):
    from tests.conftest import write_params

    write_params(ws, {"model": {"arch": "custom", "factory": factory}})
    return run_cli("layers", cwd=ws, check=False)


@pytest.mark.slow
def test_custom_factory_builds_and_lists_its_layers(factory_ws: Path) -> None:
    proc = _layers_with(factory_ws, "models.nets:good")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert [line.split()[0] for line in lines[1:-1]] == ["input", "0", "1", "2", "3"]
    assert lines[-1].startswith("total: 5 layers (extract.layers: auto), 784 + ".replace(" + ", "")[:28])


@pytest.mark.slow
@pytest.mark.parametrize("factory, code, expected", [
    ("models.missing:good", 2, r"^error: model.factory = models.missing:good: cannot import models.missing "
                               r"\(ModuleNotFoundError: No module named 'models.missing'\); put the file at "
                               r"models/missing.py"),
    ("models.nets:gooood", 2, r"^error: model.factory = models.nets:gooood: `gooood` is missing in "
                              r"models/nets.py; did you mean good\? define `def gooood\(input_shape, n_classes\)`"),
    ("models.nets:boom", 1, r"^error: model.factory = models.nets:boom: boom\(\(1, 28, 28\), 10\) raised "
                            r"ValueError: no such width; fix the function in models/nets.py$"),
    ("models.nets:not_a_module", 1, r"^error: model.factory = models.nets:not_a_module: not_a_module\(\(1, 28, 28\), "
                                    r"10\) returned a int, not a torch.nn.Module; return the network"),
    ("models.nets:wrong_shape", 1, r"^error: model.factory = models.nets:wrong_shape: the network from "
                                   r"wrong_shape\(\(1, 28, 28\), 10\) returns \(2, 5\) for a batch of 2 1x28x28 images; "
                                   r"a classifier must return \(batch, n_classes\) = \(2, 10\) logits"),
])
def test_custom_factory_failures_are_one_line(factory_ws: Path, factory: str, code: int, expected: str) -> None:
    proc = _layers_with(factory_ws, factory)
    assert proc.returncode == code, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr
    import re

    assert re.search(expected, proc.stderr.strip()), proc.stderr


def test_example_factory_shipped_in_models_builds() -> None:
    import importlib
    import sys

    sys.path.insert(0, str(REPO))
    try:
        module = importlib.import_module("models.example")
    finally:
        sys.path.remove(str(REPO))
    net = module.small_resnet((3, 32, 32), 10)
    assert net(torch.zeros(2, 3, 32, 32)).shape == (2, 10)


# ---- convert-weights --------------------------------------------------------------------------

class _RunsCode:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        import os

        return (os.system, (f"touch {self.marker}",))


@pytest.mark.slow
def test_convert_weights_roundtrip_and_refuses_pickled_code(tmp_path: Path) -> None:
    import torchvision

    net = torchvision.models.resnet18(num_classes=10)
    ckpt = tmp_path / "ck.pth"
    torch.save({"epoch": 3, "state_dict": {f"module.{k}": v for k, v in net.state_dict().items()}}, ckpt)
    proc = run_cli("convert-weights", str(ckpt), str(tmp_path / "w.safetensors"), cwd=tmp_path)
    assert "122 tensors (state dict found under `state_dict`; 'module.' prefix removed)" in proc.stdout
    model = build_model(ModelConfig(arch="torchvision:resnet18", stem="imagenet"), (3, 64, 64), 10)
    load_weights_into(model, tmp_path / "w.safetensors")
    assert torch.equal(model.net.fc.weight, net.fc.weight)

    marker = tmp_path / "ran"
    evil = tmp_path / "evil.pth"
    torch.save({"x": _RunsCode(marker)}, evil)
    with open(evil, "rb"):                       # the file does run code when fully unpickled
        torch.load(evil, weights_only=False)
    assert marker.exists()
    marker.unlink()
    proc = run_cli("convert-weights", str(evil), str(tmp_path / "e.safetensors"), cwd=tmp_path, check=False)
    assert proc.returncode == 1 and not marker.exists() and not (tmp_path / "e.safetensors").exists()
    assert proc.stderr.startswith(f"error: {evil}: refused: it holds unsupported GLOBAL posix.system")
    assert len(proc.stderr.strip().splitlines()) == 1


# ---- training options -------------------------------------------------------------------------

def test_augment_crop_and_flip_match_numpy() -> None:
    from pipeline.optim import augment_batch

    x = torch.randint(0, 256, (6, 3, 5, 7), dtype=torch.uint8)
    out = augment_batch(x, crop=True, padding=2, flip=False, generator=torch.Generator().manual_seed(4))
    offsets = torch.randint(0, 5, (2, 6), generator=torch.Generator().manual_seed(4)).numpy()
    padded = np.pad(x.numpy(), ((0, 0), (0, 0), (2, 2), (2, 2)))
    for i in range(6):
        r, c = offsets[:, i]
        np.testing.assert_array_equal(out[i].numpy(), padded[i, :, r:r + 5, c:c + 7])
    flipped = augment_batch(x, crop=False, padding=2, flip=True, generator=torch.Generator().manual_seed(1))
    mirror = (torch.rand(6, generator=torch.Generator().manual_seed(1)) < 0.5).numpy()
    assert 0 < mirror.sum() < 6
    for i in range(6):
        np.testing.assert_array_equal(flipped[i].numpy(), x[i].numpy()[..., ::-1] if mirror[i] else x[i].numpy())
    assert out.dtype == torch.uint8


def test_optimizer_and_schedules() -> None:
    from pipeline.optim import make_optimizer, make_schedule

    p = [nn.Parameter(torch.zeros(2))]
    sgd = make_optimizer(p, "sgd", lr=0.1, momentum=0.9, nesterov=True)
    assert isinstance(sgd, torch.optim.SGD) and sgd.defaults["nesterov"] and sgd.defaults["momentum"] == 0.9
    cosine = make_schedule(sgd, "cosine", epochs=4)
    lrs = []
    for _ in range(4):
        sgd.step()
        cosine.step()
        lrs.append(sgd.param_groups[0]["lr"])
    np.testing.assert_allclose(lrs, [0.1 * (1 + np.cos(np.pi * e / 4)) / 2 for e in range(1, 5)], atol=1e-12)
    adam = make_optimizer(p, "adam", lr=0.01)
    step = make_schedule(adam, "step", epochs=10, step_size=2, gamma=0.5)
    for _ in range(4):
        adam.step()
        step.step()
    assert adam.param_groups[0]["lr"] == pytest.approx(0.0025)
    assert make_schedule(adam, "none", epochs=3) is None
