"""The wheel is complete and works on its own: built from the project files offline, installed into a fresh
virtual environment, it imports from that environment (not from the checkout) and its console script runs.

The new environment sees the project's dependencies through a ``.pth`` file naming the site-packages folders
they are installed in. A path line in a ``.pth`` file only appends that folder to ``sys.path``; the ``.pth``
files inside it (such as the editable install's, which points at the checkout's ``src``) are not processed, so
the checkout stays invisible. The test asserts that too.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "src" / "spinenet"
# The top-level imports of the package; the folders holding them are what the new environment borrows.
DEPENDENCIES = ("torch", "torchvision", "numpy", "safetensors", "matplotlib", "PIL", "pycocotools", "tqdm")

pytestmark = pytest.mark.slow


def _clean_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "PIP_", "VIRTUAL_ENV"))}
    env.update(OMP_NUM_THREADS="1", PIP_DISABLE_PIP_VERSION_CHECK="1", PIP_NO_INDEX="1")
    return env


def _run(args: list[str], cwd: Path) -> str:
    proc = subprocess.run(args, cwd=cwd, env=_clean_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"{' '.join(map(str, args))} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


def _dependency_dirs() -> list[str]:
    dirs = []
    for name in DEPENDENCIES:
        module = __import__(name)
        folder = str(Path(module.__file__).resolve().parents[1])
        if folder not in dirs:
            dirs.append(folder)
    return dirs


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """Build the wheel from a copy of the project files (the checkout gets no build/ or egg-info), offline."""
    root = tmp_path_factory.mktemp("packaging")
    project = root / "project"
    project.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, project / name)
    shutil.copytree(REPO / "src", project / "src", ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info"))
    _run([sys.executable, "-m", "pip", "wheel", str(project), "--no-deps", "--no-build-isolation", "--no-index",
          "-w", str(root / "dist")], cwd=root)
    (path,) = (root / "dist").glob("spinenet_torch-*.whl")
    return path


def test_wheel_holds_every_package_file(wheel):
    """Every module and every data file under src/spinenet is in the wheel, and nothing from outside it."""
    expected = {f"spinenet/{p.relative_to(PACKAGE).as_posix()}" for p in PACKAGE.rglob("*")
                if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc"}
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
        entry_points = zf.read(next(n for n in names if n.endswith(".dist-info/entry_points.txt"))).decode()
    packaged = {n for n in names if n.startswith("spinenet/")}
    assert packaged == expected, f"missing {sorted(expected - packaged)}; extra {sorted(packaged - expected)}"
    assert all(n.startswith(("spinenet/", "spinenet_torch-")) for n in names), names
    assert "spinenet = spinenet.cli:main" in entry_points


def test_wheel_imports_in_a_clean_environment(wheel, tmp_path):
    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", str(venv)], cwd=tmp_path)
    python = venv / "bin" / "python"
    _run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "--no-index", str(wheel)],
         cwd=tmp_path)
    purelib = Path(_run([str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                        cwd=tmp_path).strip())
    (purelib / "dependencies.pth").write_text("\n".join(_dependency_dirs()) + "\n")

    script = ("import sys, spinenet; print(spinenet.__file__); print(','.join(spinenet.list_models())); "
              "print('\\n'.join(sys.path))")
    lines = _run([str(python), "-c", script], cwd=tmp_path).splitlines()
    location, models, search_path = Path(lines[0]).resolve(), lines[1].split(","), lines[2:]
    assert location.is_relative_to(venv.resolve()), f"spinenet imported from {location}, not from the new venv"
    assert "spinenet49" in models and len(models) >= 9, models
    # no other copy of the package (a checkout's src/ through an editable install) is importable at all
    others = [p for p in search_path if p and not Path(p).resolve().is_relative_to(venv.resolve())
              and (Path(p) / "spinenet" / "__init__.py").exists()]
    assert not others, f"another spinenet is on sys.path of the clean environment: {others}"

    listing = _run([str(venv / "bin" / "spinenet"), "list", "spinenet49*"], cwd=tmp_path)
    assert listing.split()[:2] == ["spinenet49s", "backbone"], listing

