"""Packaging: installed names, extras named in hints, and a command line that starts without torch."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
# Where users read install hints: the library, the CLI, training, docs and the README.
HINT_FILES = [
    *ROOT.glob("wetok/**/*.py"),
    *ROOT.glob("wetok_cli/**/*.py"),
    *ROOT.glob("train/**/*.py"),
    *ROOT.glob("docs/**/*.md"),
    *ROOT.glob("benchmarks/**/*"),
    ROOT / "README.md",
]


def test_only_wetok_names_are_installed() -> None:
    setuptools = PYPROJECT["tool"]["setuptools"]
    packages = setuptools["packages"]
    assert packages and all(p.split(".")[0].startswith("wetok") for p in packages), packages
    for name, folder in setuptools.get("package-dir", {}).items():
        assert name.startswith("wetok") and (ROOT / folder / "__init__.py").is_file()
    assert "wetok_train" in packages  # the train/ folder, under a name that cannot collide
    # Packages are listed by hand (package-dir needs it): every folder with an __init__.py must be there.
    found = {".".join(p.parent.relative_to(ROOT).parts) for p in ROOT.glob("wetok*/**/__init__.py")}
    assert found <= set(packages), sorted(found - set(packages))


def test_extras_in_hints_exist() -> None:
    extras = set(PYPROJECT["project"]["optional-dependencies"])
    named: dict[str, set[str]] = {}
    for path in HINT_FILES:
        if path.is_file():
            for found in re.findall(r"wetok\[([\w,-]+)\]", path.read_text(errors="replace")):
                for extra in found.split(","):
                    named.setdefault(extra, set()).add(str(path.relative_to(ROOT)))
    assert named, "no install hints found: the pattern is broken"
    missing = {e: sorted(files) for e, files in named.items() if e not in extras}
    assert not missing, f"hints name extras that pyproject.toml lacks: {missing}"


def test_python_requirement_matches_tomllib() -> None:
    # train/config.py reads TOML with the standard library's tomllib (3.11+).
    assert PYPROJECT["project"]["requires-python"] == ">=3.11"


def _modules_after(code: str, env: dict[str, str] | None = None) -> set[str]:
    """Run ``code`` in a fresh interpreter and return the top-level modules it imported."""
    script = f"{code}\nimport sys\nprint(' '.join(sorted({{m.split('.')[0] for m in sys.modules}})))"
    result = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, **(env or {})},
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    return set(result.stdout.split("\n")[-2].split())


RUN_CLI = """
from click.testing import CliRunner
from wetok_cli.main import cli
result = CliRunner().invoke(cli, {args!r}, prog_name="wetok")
assert result.exit_code == 0, result.output
"""


@pytest.mark.parametrize(
    "args",
    [
        ["--help"],
        ["--version"],
        ["compress", "--help"],
        ["eval", "--help"],
        ["import", "--help"],
        ["train", "--help"],
        ["models", "--help"],
    ],
)
def test_help_and_version_do_not_import_torch(args: list[str]) -> None:
    modules = _modules_after(RUN_CLI.format(args=args))
    assert "wetok_cli" in modules
    assert "torch" not in modules


def test_completion_does_not_import_torch() -> None:
    env = {"_WETOK_COMPLETE": "bash_complete", "COMP_WORDS": "wetok co", "COMP_CWORD": "1"}
    code = """
from wetok_cli.main import cli
try:
    cli(prog_name="wetok")
except SystemExit:
    pass
"""
    modules = _modules_after(code, env)
    assert "torch" not in modules


def test_lazy_package_exports() -> None:
    import wetok

    assert wetok.Codec.__name__ == "Codec"
    assert set(wetok.__all__) <= set(dir(wetok))
    with pytest.raises(AttributeError):
        _ = wetok.not_a_name


def test_lazy_exports_match_all() -> None:
    import wetok

    assert set(wetok.__all__) == {*wetok._EXPORTS, "__version__"}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    parts[0] = {"train": "wetok_train"}.get(parts[0], parts[0])
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _import_graph() -> dict[str, set[str]]:
    """Every import (module level or inside functions) between the project's modules; package
    ``__init__`` files are left out (wetok's only re-exports, lazily)."""
    import ast

    files = [p for top in ("wetok", "wetok_cli", "train") for p in (ROOT / top).rglob("*.py")]
    modules = {_module_name(p): p for p in files if p.name != "__init__.py"}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        targets: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                targets |= {a.name for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                targets |= {f"{node.module}.{a.name}" for a in node.names} | {node.module}
        graph[name] = {t for t in targets if t in modules and t != name}
    return graph


def test_no_import_cycles() -> None:
    graph = _import_graph()
    assert "wetok.codec" in graph and "wetok.zoo" in graph["wetok_cli.per_file"]
    state: dict[str, int] = {}  # 1 on the current path, 2 done

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            assert state.get(nxt) != 1, f"import cycle: {' -> '.join([*path, node, nxt])}"
            if nxt not in state:
                visit(nxt, [*path, node])
        state[node] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [])


def test_imports_go_one_way() -> None:
    """wetok imports neither the CLI nor training; the codec does not import evaluation."""
    for module, targets in _import_graph().items():
        if module.startswith("wetok."):
            assert not {t for t in targets if t.startswith(("wetok_cli", "wetok_train"))}, module
        if module.startswith("wetok.") and not module.startswith("wetok.eval."):
            assert not {t for t in targets if t.startswith("wetok.eval")}, module


@pytest.mark.parametrize(
    ("pattern", "owner"),
    [
        (r"127\.5", "wetok/image.py"),  # the [-1, 1] <-> uint8 pixel conversion
        (r"IMAGE_SUFFIXES = ", "wetok/fileio.py"),
        (r"def is_model_dir\(", "wetok/modeldir.py"),
        (r"os\.replace\(|mkstemp\(", "wetok/fileio.py"),  # atomic writes
        (r"cuda\.is_available\(\) else", "wetok/device.py"),  # device resolution
        (r"\"jpeg2000\"", "wetok/eval/classic.py"),  # the list of classic codecs
    ],
)
def test_one_owner_per_convention(pattern: str, owner: str) -> None:
    files = [p for top in ("wetok", "wetok_cli", "train", "benchmarks") for p in (ROOT / top).rglob("*.py")]
    holders = sorted(str(p.relative_to(ROOT)) for p in files if re.search(pattern, p.read_text()))
    allowed = {owner, "wetok/perceptual.py"} if pattern == r"127\.5" else {owner}  # network input scaling
    assert set(holders) <= allowed and owner in holders, holders
