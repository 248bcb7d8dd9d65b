"""The wheel is one namespace, declares what it needs, and installs into a fresh venv (issue: package layout).

Built from the checkout with the venv's setuptools, installed with pip into a new Python 3.11 venv under the
pins of ``requirements.txt`` (so torch is the CPU 2.13.0 on this machine's disk), then imported from a folder
that holds its own ``models.py`` and ``data/``, the names that used to collide with the rooms.
"""

from __future__ import annotations

import email
import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _dist_name(requirement: str) -> str:
    return re.split(r"[<>=!~; \[]", requirement, maxsplit=1)[0]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(out), str(ROOT)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    (built,) = out.glob("aptrank-*.whl")
    return built


def test_wheel_holds_one_top_level_package_and_declares_dependencies(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as z:
        names = z.namelist()
        metadata = email.message_from_bytes(z.read(next(n for n in names if n.endswith(".dist-info/METADATA"))))
    tops = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
    assert tops == {"aptrank"}
    for room in ("apt", "data", "models", "pipeline", "serving"):
        assert f"aptrank/{room}/__init__.py" in names
    assert "aptrank/py.typed" in names
    assert any(n.startswith("aptrank/data/samples/kuairand-pure/") for n in names)
    requirements = metadata.get_all("Requires-Dist")
    runtime = {_dist_name(r) for r in requirements if "extra ==" not in r}
    dev = {_dist_name(r) for r in requirements if 'extra == "dev"' in r}
    assert {"torch", "polars", "pyarrow", "mlflow", "onnxruntime", "pydantic", "typer"} <= runtime
    assert {"pytest", "ruff"} <= dev and not {"pytest", "ruff"} & runtime  # dev tools are an extra
    assert metadata["Requires-Python"] == ">=3.11"


@pytest.mark.slow
def test_wheel_installs_in_a_fresh_venv_and_imports_beside_colliding_names(wheel: Path, tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}  # nothing of the checkout
    subprocess.run([sys._base_executable, "-m", "venv", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    install = subprocess.run(
        [
            str(python),
            "-m",
            "pip",
            "install",
            "-q",
            "--no-compile",
            "--disable-pip-version-check",
            str(wheel),
            "-c",
            str(ROOT / "requirements.txt"),
        ],
        capture_output=True,
        text=True,
        timeout=900,
        env=env,
    )
    assert install.returncode == 0, install.stderr[-2000:]
    notebook = tmp_path / "notebook"
    (notebook / "data").mkdir(parents=True)
    (notebook / "models.py").write_text("raise ImportError('the notebook own models.py was imported')\n")
    (notebook / "data" / "__init__.py").write_text("raise ImportError('the notebook own data/ was imported')\n")
    probe = (
        "import aptrank, aptrank.apt, aptrank.pipeline, aptrank.data.spec, torch;"
        "print(aptrank.apt.__file__); print(torch.__version__)"
    )
    done = subprocess.run(
        [str(python), "-c", probe], cwd=notebook, capture_output=True, text=True, timeout=300, env=env
    )
    assert done.returncode == 0, done.stderr[-2000:]
    apt_file, torch_version = done.stdout.split()
    assert Path(apt_file).is_relative_to(venv) and apt_file.endswith("aptrank/apt/__init__.py")
    assert torch_version.startswith("2.13.0")
