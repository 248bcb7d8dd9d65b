"""Package layout: the repository keeps its rooms (`apt/`, `data/`, `models/`, `pipeline/`,
`serving/`) at the top level, and they install as one namespace, `aptrank.apt`, `aptrank.data`, ...

Everything else (metadata, dependencies, tools) is in `pyproject.toml`; this file only maps the
rooms under `aptrank`, which `pyproject.toml` alone cannot express for a tree of subpackages.
"""

from setuptools import find_packages, setup

ROOMS = ("apt", "data", "models", "pipeline", "serving")

setup(
    packages=["aptrank", *(f"aptrank.{p}" for p in find_packages(include=[*ROOMS, *(f"{r}.*" for r in ROOMS)]))],
    package_dir={"aptrank": "aptrank", **{f"aptrank.{room}": room for room in ROOMS}},
    package_data={"aptrank": ["py.typed"], "aptrank.data": ["samples/**/*"]},
)
