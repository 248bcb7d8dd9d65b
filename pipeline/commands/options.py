"""Command-line options that several commands share, declared once so their help stays the same."""

from __future__ import annotations

from typing import Annotated

import typer

AllowUnverifiedModel = Annotated[
    bool,
    typer.Option(
        "--allow-unverified-model",
        help="load a model that carries no SHA-256 (no .sha256 sidecar, no registry tag), with a warning; "
        "a digest that does not match is refused all the same",
    ),
]
"""``aptrank score`` and ``aptrank serve``: the opt-out of the model digest check (issue #20)."""
