"""``aptrank generate``: write a synthetic impression log in the canonical schema.

Options mirror :class:`aptrank.data.synthetic.GeneratorConfig` one to one (defaults and help texts are read
from it, so the two cannot drift apart).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from aptrank.data.synthetic import ConfigError, GeneratorConfig, generate

D, H = GeneratorConfig.default, GeneratorConfig.help


def generate_command(
    out: Annotated[Path, typer.Option(help="output folder (events/, items.parquet, users.parquet, manifest.json)")],
    users: Annotated[int, typer.Option(help=H("users"))] = D("users"),
    items: Annotated[int, typer.Option(help=H("items"))] = D("items"),
    events: Annotated[int, typer.Option(help=H("events"))] = D("events"),
    days: Annotated[int, typer.Option(help=H("days"))] = D("days"),
    seed: Annotated[int, typer.Option(help=H("seed"))] = D("seed"),
    start: Annotated[str, typer.Option(help=H("start"))] = D("start"),
    task_correlation: Annotated[float, typer.Option(help=H("task_correlation"))] = D("task_correlation"),
    like_alignment: Annotated[float, typer.Option(help=H("like_alignment"))] = D("like_alignment"),
    click_rate: Annotated[float, typer.Option(help=H("click_rate"))] = D("click_rate"),
    like_rate: Annotated[float, typer.Option(help=H("like_rate"))] = D("like_rate"),
    finish_rate: Annotated[float, typer.Option(help=H("finish_rate"))] = D("finish_rate"),
    finish_ratio: Annotated[float, typer.Option(help=H("finish_ratio"))] = D("finish_ratio"),
    signal: Annotated[float, typer.Option(help=H("signal"))] = D("signal"),
    factors: Annotated[int, typer.Option(help=H("factors"))] = D("factors"),
    zipf: Annotated[float, typer.Option(help=H("zipf"))] = D("zipf"),
    activity_sigma: Annotated[float, typer.Option(help=H("activity_sigma"))] = D("activity_sigma"),
    categories: Annotated[int, typer.Option(help=H("categories"))] = D("categories"),
    tabs: Annotated[int, typer.Option(help=H("tabs"))] = D("tabs"),
    bad_rows: Annotated[float, typer.Option(help=H("bad_rows"))] = D("bad_rows"),
    truth: Annotated[bool, typer.Option("--truth/--no-truth", help=H("truth"))] = D("truth"),
    chunk_size: Annotated[int, typer.Option(help=H("chunk_size"))] = D("chunk_size"),
    rows_per_part: Annotated[int, typer.Option(help=H("rows_per_part"))] = D("rows_per_part"),
    overwrite: Annotated[bool, typer.Option(help="replace generator output already in --out")] = False,
    progress: Annotated[bool, typer.Option(help="show a progress bar on stderr (when it is a terminal)")] = True,
) -> None:
    """Generate a synthetic impression log (latent-factor world, Zipf popularity, correlated tasks,
    optional malformed rows) as day-partitioned Parquet plus items, users and a manifest."""
    params = {k: v for k, v in locals().items() if k not in ("out", "overwrite", "progress")}
    try:
        cfg = GeneratorConfig(**params)
    except ConfigError as err:
        raise typer.BadParameter(str(err), param_hint=f"--{err.param.replace('_', '-')}") from None
    try:
        manifest = generate(out, cfg, overwrite=overwrite, progress=progress)
    except FileExistsError as err:
        raise typer.BadParameter(str(err), param_hint="--out") from None
    rates = ", ".join(f"{t} {r['observed_clean']:.4f}" for t, r in manifest["label_rates"].items())
    typer.echo(
        f"wrote {manifest['rows']['events']} events ({sum(manifest['bad_rows'].values())} bad) in "
        f"{len(manifest['files'])} files to {out}; label rates on clean rows: {rates}"
    )


def register(app: typer.Typer) -> None:
    """Add the ``generate`` command to the ``aptrank`` app."""
    app.command("generate")(generate_command)
