"""The README's test command is the one CI runs (.ci/run), so a number measured with one holds for the other."""

from __future__ import annotations

import re

from tests.conftest import REPO


def _pytest_args(text: str, where: str) -> list[str]:
    commands = re.findall(r"\.venv/bin/python -m pytest([^\n`]*)", text)
    assert len(commands) == 1, f"{where}: expected one `.venv/bin/python -m pytest` command, found {commands}"
    return commands[0].split()


def test_readme_and_ci_run_the_same_test_command():
    readme = _pytest_args((REPO / "README.md").read_text(), "README.md")
    ci = _pytest_args((REPO / ".ci" / "run").read_text(), ".ci/run")
    assert readme == ci
    assert "--durations=25" in ci                      # CI's output lists the slowest tests
