"""The ``aptrank`` command: one CLI, one module per subcommand under :mod:`aptrank.pipeline.commands`.

Each command module defines ``register(app: typer.Typer) -> None``; the list below is the only
place that knows which commands exist. A command is a thin adapter: it parses options, calls the
library (``pipeline.training``, ``pipeline.run_export``, ``pipeline.job``, ``pipeline.scoring``, ...)
and maps its errors to exit codes. This module is the only one that imports the commands
(``tests/test_layering.py``).
"""

from __future__ import annotations

import importlib
import logging
import warnings

import typer

# Library noise that says nothing to a user of this CLI (TorchRec/fbgemm deprecations, torch.fx).
warnings.filterwarnings("ignore", category=DeprecationWarning)
warnings.filterwarnings("ignore", category=FutureWarning, module="torchrec")
warnings.filterwarnings("ignore", category=UserWarning, module=r"(torch\.onnx|onnxscript|torch\._export)")
warnings.filterwarnings("ignore", category=FutureWarning, message=r".*LeafSpec.*")
for noisy in (
    "torch.fx._symbolic_trace",
    "torch.onnx",
    "torch.onnx._internal.exporter._registration",
    "torch._dynamo",
    "torch.export",
):
    logging.getLogger(noisy).setLevel(logging.ERROR)

COMMAND_MODULES: tuple[str, ...] = ("generate", "etl", "train", "run", "export", "score", "serve", "experiment")

app = typer.Typer(
    name="aptrank",
    help="Multi-task ranking pipeline: ETL, multi-task training with task-aware optimizers, "
    "MLflow registry, ONNX scoring.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _register_all() -> None:
    for name in COMMAND_MODULES:
        module = importlib.import_module(f"aptrank.pipeline.commands.{name}")
        module.register(app)


_register_all()


def main() -> None:
    """Console entry point (``aptrank``)."""
    app()


if __name__ == "__main__":
    main()
