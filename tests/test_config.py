"""params.yaml validation: every bad value gives one line naming key, value and what is allowed."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline.config import Params, load_params, parse_params
from pipeline.errors import ConfigError
from tests.conftest import run_cli, write_params


def test_defaults_match_params_yaml():
    """The committed params.yaml is valid, and every section it has is known."""
    repo_params = Path(__file__).resolve().parents[1] / "params.yaml"
    params = load_params(repo_params)
    assert params.data.dataset == "mnist-5k"
    assert params.model.arch == "lenet"


def test_missing_file_is_an_error_and_an_empty_one_means_defaults(tmp_path):
    with pytest.raises(ConfigError, match=r"nope.yaml: params file not found; run from the project folder"):
        load_params(tmp_path / "nope.yaml")
    (tmp_path / "empty.yaml").write_text("{}\n")
    assert load_params(tmp_path / "empty.yaml") == Params()


@pytest.mark.parametrize(
    "raw, expected",
    [
        ({"train": {"epochs": -1}}, "train.epochs = -1: must be greater than or equal to 0"),
        ({"train": {"epochs": "ten"}}, "train.epochs = ten: must be a valid integer"),
        ({"train": {"lr": 0}}, "train.lr = 0: must be greater than 0"),
        ({"model": {"arch": "resnet"}}, "model.arch = resnet: must be one of lenet, cnn, mlp, linear, ae, conv_ae, vae, custom (with model.factory) or torchvision:<name>"),
        ({"data": {"dataset": "imagenet"}}, "data.dataset = imagenet: must be 'mnist-5k'"),
        ({"model": {"filtres": 8}}, "model.filtres: unknown key; did you mean 'filters'?"),
        ({"modle": {}}, "modle: unknown key; did you mean 'model'?"),
        ({"model": {"hidden": [64, 0]}}, "model.hidden = [64, 0]: every hidden size must be a positive integer"),
        ({"extract": {"layers": []}}, "extract.layers = []: empty list"),
        ({"reduce": {"tsne": {"perplexity": -5}}}, "reduce.tsne.perplexity = -5: must be greater than 0"),
        ({"data": {"n_test": 0}}, "data.n_test = 0: must be greater than or equal to 10"),
        ({"train": {"batch_size": 1.5}}, "train.batch_size = 1.5: must be a valid integer"),
    ],
)
def test_bad_values_name_key_value_and_rule(raw, expected):
    with pytest.raises(ConfigError) as info:
        parse_params(raw)
    message = str(info.value)
    assert expected in message
    assert "\n" not in message


def test_several_problems_stay_on_one_line():
    with pytest.raises(ConfigError) as info:
        parse_params({"train": {"epochs": -1, "lr": -1}})
    assert "train.epochs" in str(info.value) and "train.lr" in str(info.value)
    assert "\n" not in str(info.value)


def test_not_a_mapping():
    with pytest.raises(ConfigError, match="expected a mapping"):
        parse_params([1, 2, 3])


def test_yaml_syntax_error_names_line(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text("train:\n  epochs: [1, 2\n")
    with pytest.raises(ConfigError) as info:
        load_params(path)
    assert "YAML syntax error at line" in str(info.value)


# Any mapping either loads or gives the one-line ConfigError: never another exception.
_scalars = st.one_of(st.none(), st.booleans(), st.integers(-10**6, 10**6), st.floats(allow_nan=True),
                     st.text(max_size=8))
_values = st.recursive(_scalars, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                          st.dictionaries(st.text(max_size=6), inner, max_size=3)),
                       max_leaves=6)
_keys = st.sampled_from(["data", "model", "train", "extract", "reduce", "probe", "render", "projector",
                         "export", "bogus"])
_subkeys = st.sampled_from(["dataset", "arch", "epochs", "lr", "filters", "kernel_size", "hidden", "layers",
                            "n_samples", "tsne", "perplexity", "whatever"])


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(_keys, st.one_of(_values, st.dictionaries(_subkeys, _values, max_size=4)), max_size=4))
def test_any_mapping_loads_or_gives_one_line(raw):
    try:
        parse_params(raw)
    except ConfigError as exc:
        assert "\n" not in str(exc) and str(exc).startswith("params.yaml")


# ---- through the real command line: exit code 2, one line, nothing written -------------------

@pytest.mark.parametrize(
    "overrides, expected",
    [
        ({"train": {"epochs": "many"}}, "train.epochs = many"),
        ({"train": {"epochs": -3}}, "train.epochs = -3"),
        ({"model": {"arch": "transformer"}}, "model.arch = transformer"),
        ({"data": {"dataset": "svhn"}}, "data.dataset = svhn"),
        ({"model": {"kernel_sizes": 3}}, "model.kernel_sizes: unknown key"),
    ],
)
def test_cli_bad_params_exit_2_one_line(tmp_path, overrides, expected):
    write_params(tmp_path, overrides)
    proc = run_cli("fetch", cwd=tmp_path, check=False)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("error: params.yaml: ") and expected in lines[0]
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "data").exists()


def test_cli_yaml_syntax_error(tmp_path):
    (tmp_path / "params.yaml").write_text("model:\n  arch: lenet\n   filters: 3\n")
    proc = run_cli("train", cwd=tmp_path, check=False)
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and "YAML syntax error at line 3" in proc.stderr


def test_unknown_key_is_refused_by_pydantic_model():
    with pytest.raises(ConfigError):
        parse_params(yaml.safe_load("train: {epochs: 1, epoch: 2}"))


def _leaf_keys(model_cls, prefix=""):
    for name, field in model_cls.model_fields.items():
        sub = field.annotation
        if isinstance(sub, type) and issubclass(sub, __import__("pydantic").BaseModel):
            yield from _leaf_keys(sub, f"{prefix}{name}.")
        else:
            yield f"{prefix}{name}"


def test_params_yaml_spells_out_every_key():
    """`dvc exp run -S section.key=...` only sets keys that exist in params.yaml: list them all."""
    raw = yaml.safe_load((Path(__file__).resolve().parents[1] / "params.yaml").read_text())

    def present(key: str) -> bool:
        node = raw
        for part in key.split("."):
            if not isinstance(node, dict) or part not in node:
                return False
            node = node[part]
        return True

    missing = [key for key in _leaf_keys(Params) if not present(key)]
    assert not missing, missing
