"""The wheel holds the whole import package: a non-editable install must work.

pyproject.toml maps folders into one import package (core/ -> onnxsmith, cli/ ->
onnxsmith.cli, passes/ -> onnxsmith.passes, backends/ -> onnxsmith.backends) and lists the
packages by hand, because setuptools cannot discover them through that mapping. An editable
install hides a missing subpackage (it imports from the source tree); a wheel does not. So
build the wheel (PEP 517, no build isolation: offline and a few seconds) from a copy of the
tree and read what is in it.
"""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# Source folder -> the import package it becomes (pyproject.toml's [tool.setuptools.package-dir]).
PACKAGE_DIRS = {"core": "onnxsmith", "cli": "onnxsmith.cli", "passes": "onnxsmith.passes", "backends": "onnxsmith.backends"}

# What a wheel build never reads; everything else (tests/, bench/, fixtures/ included) is
# copied, so the wheel shows whether they would be packaged. A stale build/ or egg-info
# could add files the configuration no longer selects, so neither is copied.
_TOP_IGNORE = {".git", ".venv", "venv", "build", "dist", "out"}
_ANYWHERE_IGNORE = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info", ".pytest_cache", ".hypothesis")


def _ignore(folder: str, names: list[str]) -> set[str]:
    ignored = set(_ANYWHERE_IGNORE(folder, names))
    return ignored | (_TOP_IGNORE & set(names)) if Path(folder) == ROOT else ignored


def _source_files(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc"]


def _wheel_name(folder: str, path: Path) -> str:
    """``core/batch/x.py`` -> ``onnxsmith/batch/x.py``: where a source file lands in the wheel."""
    return "/".join([*PACKAGE_DIRS[folder].split("."), *path.relative_to(ROOT / folder).parts])


@pytest.fixture(scope="module")
def wheel_files(tmp_path_factory: pytest.TempPathFactory) -> set[str]:
    # Not a skip: a missing `build` must not hide a broken wheel (it is in the dev extra).
    assert importlib.util.find_spec("build") and importlib.util.find_spec("setuptools"), \
        "building the wheel needs `build` and `setuptools`: pip install -e '.[dev]'"
    tmp = tmp_path_factory.mktemp("wheel")
    src, out = tmp / "src", tmp / "dist"
    shutil.copytree(ROOT, src, ignore=_ignore)
    proc = subprocess.run([sys.executable, "-m", "build", "--wheel", "--no-isolation", "-o", str(out)],
                          cwd=src, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, f"wheel build failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    (wheel,) = out.glob("onnxsmith-*.whl")
    with zipfile.ZipFile(wheel) as zf:
        return set(zf.namelist())


def test_every_subpackage_is_in_the_wheel(wheel_files: set[str]) -> None:
    expected = sorted(
        (folder, _wheel_name(folder, init))
        for folder in PACKAGE_DIRS for init in (ROOT / folder).rglob("__init__.py") if "__pycache__" not in init.parts
    )
    assert len(expected) >= len(PACKAGE_DIRS)
    missing = [f"{folder}/{Path(name).parent.relative_to(PACKAGE_DIRS[folder].replace('.', '/'))} -> "
               f"{Path(name).parent.as_posix().replace('/', '.')}" for folder, name in expected if name not in wheel_files]
    assert not missing, f"packages missing from the wheel (add them to [tool.setuptools] packages): {missing}"


def test_every_module_is_in_the_wheel(wheel_files: set[str]) -> None:
    expected = [_wheel_name(folder, p) for folder in PACKAGE_DIRS for p in _source_files(ROOT / folder) if p.suffix == ".py"]
    missing = sorted(name for name in expected if name not in wheel_files)
    assert not missing, f"modules missing from the wheel: {missing}"


def test_presets_are_in_the_wheel(wheel_files: set[str]) -> None:
    presets = sorted((ROOT / "core" / "presets").glob("*.yaml"))
    assert presets, "core/presets/ holds the shipped presets"
    missing = [p.name for p in presets if f"onnxsmith/presets/{p.name}" not in wheel_files]
    assert not missing, f"presets missing from the wheel ([tool.setuptools.package-data]): {missing}"


def test_wheel_holds_only_the_package(wheel_files: set[str]) -> None:
    # Only onnxsmith/ and its metadata: no tests/, bench/, fixtures/ or top-level core/ etc.
    tops = {name.split("/", 1)[0] for name in wheel_files}
    assert {t for t in tops if not t.endswith(".dist-info")} == {"onnxsmith"}, sorted(tops)
    assert not [n for n in wheel_files if n.split("/")[1:2] in (["tests"], ["bench"], ["fixtures"])]
    (dist_info,) = [t for t in tops if t.endswith(".dist-info")]
    assert f"{dist_info}/entry_points.txt" in wheel_files
