"""The package's layers (DESIGN.md, pyproject's [tool.importlinter]): imports run only downward,
no family imports another, no circles. The contracts are checked by import-linter over the real
import graph; this test also checks that a broken rule is caught (a contract that cannot fail
proves nothing)."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
lint_imports = shutil.which("lint-imports")
pytestmark = pytest.mark.skipif(lint_imports is None, reason="import-linter is not installed (pip install -e '.[test]')")


def _lint(root: Path) -> subprocess.CompletedProcess:
    return subprocess.run([lint_imports, "--no-cache"], cwd=root, capture_output=True, text=True, env={"PYTHONPATH": str(root), "PATH": "/usr/bin:/bin"})


def test_the_package_keeps_its_layers():
    result = _lint(ROOT)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert "Contracts: 2 kept, 0 broken." in result.stdout


def test_an_upward_import_and_a_family_importing_another_are_caught(tmp_path):
    copy = tmp_path / "repo"
    shutil.copytree(ROOT / "longvid", copy / "longvid", ignore=shutil.ignore_patterns("__pycache__", "weights"))
    shutil.copy(ROOT / "pyproject.toml", copy / "pyproject.toml")
    with open(copy / "longvid" / "core" / "stream.py", "a") as f:
        f.write("\nfrom longvid.registry import build_model  # noqa: E402,F401  (upward)\n")
    with open(copy / "longvid" / "malmm" / "config.py", "a") as f:
        f.write("\nimport longvid.rewind.config  # noqa: E402,F401  (another family)\n")
    result = _lint(copy)
    assert result.returncode != 0
    assert "longvid.core.stream -> longvid.registry" in result.stdout
    assert "longvid.malmm.config -> longvid.rewind.config" in result.stdout
