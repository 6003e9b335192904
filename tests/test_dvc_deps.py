"""dvc.yaml declares exactly the code each stage runs: the stage module and every ``pipeline/``
module it imports, transitively (imports inside functions included, ``if TYPE_CHECKING:`` blocks
not, since they never run).

DVC reruns a stage only when one of its declared deps changes, so a module the stage imports but
dvc.yaml leaves out is a stale cache waiting to happen (edit the normaliser, `dvc status` stays
clean), and a module it declares but does not import reruns the stage for nothing. Both fail here.

The command-line plumbing every stage passes through is not a dep of any stage, on purpose:
``pipeline/__main__.py`` and ``pipeline/cli.py`` only parse the command line and call
``pipeline.stages.<name>.run(params)`` (a help text edit must not rerun the pipeline), and package
``__init__.py`` files that hold no code (a docstring, constants) are skipped; the test checks that
they really hold none.

``python -m tests.test_dvc_deps`` prints the code deps of every stage, ready for dvc.yaml.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO

PACKAGE = "pipeline"
ENTRY = {"pipeline/__main__.py", "pipeline/cli.py"}         # command-line plumbing (see above)
_CMD = re.compile(r"^python -m pipeline (\w+)\b")


def module_file(name: str, root: Path = REPO) -> Path | None:
    """``pipeline.models.cnn`` -> pipeline/models/cnn.py (or the package's __init__.py); None if absent."""
    base = root.joinpath(*name.split("."))
    if base.with_suffix(".py").is_file():
        return base.with_suffix(".py")
    if (base / "__init__.py").is_file():
        return base / "__init__.py"
    return None


def _module_name(path: Path, root: Path) -> str:
    rel = path.relative_to(root).with_suffix("")
    parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
    return ".".join(parts)


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or \
        (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _runtime_imports(tree: ast.AST) -> list[ast.Import | ast.ImportFrom]:
    """Every import statement that can run: anywhere in the module, except under ``if TYPE_CHECKING:``."""
    found: list[ast.Import | ast.ImportFrom] = []

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            found.append(node)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return found


def _parents(name: str) -> list[str]:
    """``a.b.c`` -> [a, a.b, a.b.c]: importing a submodule runs every package __init__ above it."""
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts) + 1)]


def direct_imports(path: Path, root: Path = REPO) -> set[Path]:
    """Files of the ``pipeline`` package that importing ``path`` runs directly (one level)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    here = _module_name(path, root)
    package = here if path.name == "__init__.py" else here.rpartition(".")[0]
    names: set[str] = set()
    for node in _runtime_imports(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
            continue
        if node.level:                                         # relative: from . import x, from ..a import b
            base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
            module = ".".join(base + ([node.module] if node.module else []))
        else:
            module = node.module or ""
        names.add(module)
        for alias in node.names:                               # `from pipeline import artifacts`: a submodule
            if module_file(f"{module}.{alias.name}", root) is not None:
                names.add(f"{module}.{alias.name}")
    files: set[Path] = set()
    for name in names:
        if name.split(".")[0] != PACKAGE:
            continue
        for parent in _parents(name):
            file = module_file(parent, root)
            if file is not None:
                files.add(file)
    files.discard(path)
    return files


def closure(start: Path, root: Path = REPO) -> set[Path]:
    """``start`` and every pipeline file it imports, transitively."""
    seen, todo = {start}, [start]
    while todo:
        for file in direct_imports(todo.pop(), root):
            if file not in seen:
                seen.add(file)
                todo.append(file)
    return seen


def holds_no_code(path: Path) -> bool:
    """A docstring and constant assignments only (nothing that imports, defines or calls)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for node in tree.body:
        if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant):
            continue
        if isinstance(node, (ast.Assign, ast.AnnAssign)) and isinstance(node.value, ast.Constant):
            continue
        return False
    return True


def _rel(path: Path, root: Path) -> str:
    return path.relative_to(root).as_posix()


def code_deps(stage_module: Path, root: Path = REPO) -> set[str]:
    """The files dvc.yaml must list for a stage whose command runs ``stage_module``."""
    files = {_rel(f, root) for f in closure(stage_module, root)}
    empty_inits = {f for f in files if f.endswith("__init__.py") and holds_no_code(root / f)}
    return files - ENTRY - empty_inits


def stage_modules(dvc_yaml: dict, root: Path = REPO) -> dict[str, Path]:
    """dvc.yaml stage name -> the stage module its ``cmd`` runs (``python -m pipeline NAME``)."""
    out = {}
    for name, stage in dvc_yaml["stages"].items():
        body = stage.get("do", stage)
        match = _CMD.match(body["cmd"])
        assert match, f"{name}: cmd {body['cmd']!r} does not run `python -m pipeline <stage>`"
        out[name] = root / PACKAGE / "stages" / f"{match.group(1)}.py"
    return out


def declared_code(deps: list, root: Path = REPO) -> tuple[set[str], list[str]]:
    """The pipeline .py files a stage's deps cover (a folder covers every .py under it), and the
    folders among them that cover files the stage does not need are reported by the caller."""
    files: set[str] = set()
    folders: list[str] = []
    for dep in deps:
        dep = str(dep).rstrip("/")
        if not (dep == PACKAGE or dep.startswith(PACKAGE + "/")):
            continue
        path = root / dep
        if path.is_dir():
            folders.append(dep)
            files.update(_rel(p, root) for p in path.rglob("*.py") if "__pycache__" not in p.parts)
        else:
            files.add(dep)
    return files, folders


def check_stage(name: str, deps: list, module: Path, root: Path = REPO) -> list[str]:
    """Problems of one stage's code deps, one line each (empty: exact)."""
    needed = code_deps(module, root)
    declared, folders = declared_code(deps, root)
    problems = [f"{name}: imports {f} but dvc.yaml does not list it" for f in sorted(needed - declared)]
    missing_files = [d for d in deps if str(d).startswith(PACKAGE + "/") and not (root / str(d)).exists()]
    problems += [f"{name}: dvc.yaml lists {d}, which does not exist" for d in missing_files]
    extra = declared - needed - ENTRY - set(missing_files)
    extra = {f for f in extra if not (f.endswith("__init__.py") and holds_no_code(root / f))}
    for folder in folders:
        unused = sorted(f for f in extra if f.startswith(folder + "/"))
        if unused:
            problems.append(f"{name}: dvc.yaml lists the folder {folder}, but the stage does not import "
                            f"{', '.join(unused)}; list the files it imports instead")
        extra -= set(unused)
    problems += [f"{name}: dvc.yaml lists {f}, which the stage does not import" for f in sorted(extra)]
    return problems


def _load_dvc_yaml(root: Path = REPO) -> dict:
    return yaml.safe_load((root / "dvc.yaml").read_text())


# --------------------------------------------------------------------------------------------


def test_every_stage_declares_exactly_the_code_it_imports():
    dvc_yaml = _load_dvc_yaml()
    problems = []
    for name, module in stage_modules(dvc_yaml).items():
        body = dvc_yaml["stages"][name].get("do", dvc_yaml["stages"][name])
        problems += check_stage(name, body.get("deps", []), module)
    assert not problems, "\n".join(problems) + "\n(`python -m tests.test_dvc_deps` prints the right lists)"


def test_entry_plumbing_and_empty_inits_hold_no_stage_code():
    """What the check leaves out is what it claims: cli.py only dispatches to the stage modules,
    and the skipped __init__ files hold nothing that runs."""
    tree = ast.parse((REPO / "pipeline/cli.py").read_text())
    assert not any(isinstance(n, (ast.Import, ast.ImportFrom)) and (getattr(n, "module", "") or "").startswith(PACKAGE)
                   for n in tree.body), "cli.py imports pipeline modules at load time; keep them lazy"
    for init in ("pipeline/__init__.py", "pipeline/stages/__init__.py"):
        assert holds_no_code(REPO / init), f"{init} now holds code: make it a dep of the stages that import it"


_FILES = {
    "pipeline/__init__.py": '"""pkg"""\n__version__ = "1"\n',
    "pipeline/stages/__init__.py": '"""stages"""\n',
    "pipeline/stages/s.py": "from pipeline import a\nfrom typing import TYPE_CHECKING\n"
                            "if TYPE_CHECKING:\n    from pipeline import typed_only\n"
                            "def run():\n    from .. import lazy\n",
    "pipeline/a.py": "import numpy\nfrom pipeline.sub.b import f\n",
    "pipeline/sub/__init__.py": "from pipeline.sub import c\n",
    "pipeline/sub/b.py": "def f(): pass\n",
    "pipeline/sub/c.py": "",
    "pipeline/sub/unused.py": "",
    "pipeline/lazy.py": "",
    "pipeline/typed_only.py": "",
}


def _fake_package(root: Path) -> Path:
    """A small package under ``root`` (files below); returns its stage module."""
    for rel, text in _FILES.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    return root / "pipeline/stages/s.py"



def test_walker_finds_transitive_lazy_relative_and_package_imports(tmp_path: Path):
    assert code_deps(_fake_package(tmp_path), tmp_path) == {"pipeline/stages/s.py", "pipeline/a.py", "pipeline/sub/__init__.py", "pipeline/sub/b.py",
                      "pipeline/sub/c.py", "pipeline/lazy.py"}


@pytest.mark.parametrize("deps, expected", [
    (["pipeline/stages/s.py", "pipeline/a.py", "pipeline/sub/__init__.py", "pipeline/sub/b.py",
      "pipeline/sub/c.py", "pipeline/lazy.py"], []),
    (["pipeline/stages/s.py", "pipeline/a.py", "pipeline/sub/__init__.py", "pipeline/sub/b.py",
      "pipeline/sub/c.py"], ["s: imports pipeline/lazy.py but dvc.yaml does not list it"]),
    (["pipeline/stages/s.py", "pipeline/a.py", "pipeline/sub", "pipeline/lazy.py"],
     ["s: dvc.yaml lists the folder pipeline/sub, but the stage does not import pipeline/sub/unused.py; "
      "list the files it imports instead"]),
    (["pipeline/stages/s.py", "pipeline/a.py", "pipeline/sub/__init__.py", "pipeline/sub/b.py",
      "pipeline/sub/c.py", "pipeline/lazy.py", "pipeline/typed_only.py"],
     ["s: dvc.yaml lists pipeline/typed_only.py, which the stage does not import"]),
    (["pipeline/stages/s.py", "pipeline/a.py", "pipeline/sub/__init__.py", "pipeline/sub/b.py",
      "pipeline/sub/c.py", "pipeline/lazy.py", "pipeline/gone.py"],
     ["s: dvc.yaml lists pipeline/gone.py, which does not exist"]),
])
def test_check_reports_missing_unused_and_too_wide_deps(tmp_path: Path, deps, expected):
    assert check_stage("s", deps, _fake_package(tmp_path), tmp_path) == expected


def suggested_deps(root: Path = REPO) -> dict[str, list[str]]:
    """Stage -> its code deps, sorted (stage module first), with a folder where the stage imports all of it."""
    out = {}
    for name, module in stage_modules(_load_dvc_yaml(root), root).items():
        files = code_deps(module, root)
        folders = sorted({str(Path(f).parent.as_posix()) for f in files if f.count("/") >= 2
                          and not f.startswith(f"{PACKAGE}/stages/")})
        for folder in folders:
            inside = {_rel(p, root) for p in (root / folder).rglob("*.py") if "__pycache__" not in p.parts}
            inside = {f for f in inside if not (f.endswith("__init__.py") and holds_no_code(root / f))}
            if inside <= files:
                files = (files - inside) | {folder}
        first = _rel(module, root)
        out[name] = [first, *sorted(files - {first})]
    return out


if __name__ == "__main__":
    for stage, deps in suggested_deps().items():
        print(f"{stage}:")
        for dep in deps:
            print(f"  - {dep}")
