"""The command line itself: help that is not cut, choices, options after the command, --version."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO, run_cli, write_params


def _help(*args: str, columns: int) -> str:
    env = {**os.environ, "PYTHONPATH": str(REPO), "COLUMNS": str(columns)}
    code = ("import sys; from pipeline.cli import main; sys.argv[0] = 'pipeline'; main(sys.argv[1:])")
    proc = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, env=env, cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


@pytest.mark.parametrize("columns", [60, 80, 200])
def test_command_list_gives_every_short_help_whole(columns: int) -> None:
    from pipeline.cli import app
    import typer.main

    group = typer.main.get_command(app)
    out = _help("--help", columns=columns)
    listing = out.split("Commands:", 1)[1]
    # join the wrapped continuation lines back onto their command
    rows: dict[str, str] = {}
    current = None
    for line in listing.splitlines():
        m = re.match(r"^  (\S+)\s+(.*)$", line)
        if m and m.group(1) in group.commands:
            current = m.group(1)
            rows[current] = m.group(2).strip()
        elif current and line.strip():
            rows[current] += " " + line.strip()
    assert set(rows) == set(group.commands)
    for name, text in rows.items():
        command = group.commands[name]
        assert command.short_help, f"{name}: no short help, click would cut the docstring"
        assert text == command.short_help, (name, text)
        assert not text.endswith("...") and text.endswith("."), (name, text)


def test_help_and_version_do_not_import_torch() -> None:
    code = ("import sys; from pipeline.cli import main\n"
            "for args in (['--help'], ['reduce', '--help'], ['--version']):\n"
            "    try: main(args)\n"
            "    except SystemExit as e: assert e.code == 0, (args, e.code)\n"
            "print('torch' in sys.modules)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == "False"


def test_version_matches_the_package(tmp_path: Path) -> None:
    import tomllib

    import pipeline

    proc = run_cli("--version", cwd=tmp_path)
    assert proc.stdout.strip() == f"hidden-spaces {pipeline.__version__}"
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert project["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "pipeline.__version__"}


def test_reduce_method_is_a_choice(tmp_path: Path) -> None:
    from pipeline.cli import Method
    from pipeline.config import METHODS

    assert tuple(m.value for m in Method) == METHODS
    out = _help("reduce", "--help", columns=100)
    assert "pca|tsne|umap" in out
    proc = run_cli("reduce", "isomap", cwd=tmp_path, check=False)
    assert proc.returncode == 2
    assert "'isomap' is not one of 'pca', 'tsne', 'umap'" in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.slow
def test_params_option_after_the_command(tmp_path: Path, capsys: pytest.CaptureFixture,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """`layers -p other.yaml` reads other.yaml; after the command wins over before it."""
    write_params(tmp_path)                                         # params.yaml: lenet (has conv layers)
    other = tmp_path / "mlp.yaml"
    other.write_text((tmp_path / "params.yaml").read_text().replace("arch: lenet", "arch: mlp"))
    assert "arch: mlp" in other.read_text()

    from pipeline import cli

    def layers(*args: str) -> str:                     # in this process: no torch import per call
        capsys.readouterr()
        with pytest.raises(SystemExit) as exc:
            cli.main([*args])
        assert exc.value.code == 0
        return capsys.readouterr().out

    monkeypatch.chdir(tmp_path)
    default = layers("layers")
    after = layers("layers", "-p", "mlp.yaml")
    before = layers("--params", "mlp.yaml", "layers")
    both = layers("-p", "params.yaml", "layers", "--params", "mlp.yaml")
    assert "Conv2d" in default
    assert "Conv2d" not in after and "Linear" in after
    assert after == before == both

    missing = run_cli("fetch", "-p", "nope.yaml", cwd=tmp_path, check=False)
    assert missing.returncode == 2
    assert missing.stderr.strip() == "error: --params nope.yaml: file not found; give an existing YAML file (or leave --params out)"
    assert not (tmp_path / "data").exists()


def test_every_command_that_reads_params_takes_the_option_after_it() -> None:
    import typer.main

    from pipeline.cli import app

    group = typer.main.get_command(app)
    without = {"convert-weights"}                       # reads no params.yaml
    for name, command in group.commands.items():
        opts = {o for p in command.params for o in getattr(p, "opts", [])}
        assert ({"-p", "--params"} <= opts) == (name not in without), name


def test_params_file_does_not_carry_over_between_invocations(tmp_path: Path, monkeypatch, capsys) -> None:
    """`--params` belongs to one invocation (click's context), not to a module global: a second
    in-process call without it reads params.yaml again."""
    from pipeline import cli

    monkeypatch.chdir(tmp_path)
    (tmp_path / "params.yaml").write_text("model: {arch: lenet}\n")
    (tmp_path / "other.yaml").write_text("model: {arch: mlp, hidden: [7]}\n")
    outputs = []
    for argv in (["-p", "other.yaml", "layers"], ["layers"], ["layers", "-p", "other.yaml"]):
        with pytest.raises(SystemExit) as exc:
            cli.main(argv)
        assert exc.value.code == 0
        outputs.append(capsys.readouterr().out)
    assert "conv1" not in outputs[0] and "(7,)" in outputs[0]
    assert "conv1" in outputs[1] and "(7,)" not in outputs[1]
    assert outputs[2] == outputs[0]
    assert not hasattr(cli, "_state")
