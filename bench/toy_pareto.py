"""The classic two-objective toy (CAGrad, Liu et al. NeurIPS 2021; Nash-MTL, Navon et al. ICML 2022):
trajectories of EW, MGDA, PCGrad, CAGrad, Nash-MTL (and IMGrad, SDMGrad, Aligned-MTL) from the
papers' three starting points, each driven by ``apt.MultiTaskOptimizer`` with Adam.

Writes ``bench/results/toy_pareto.png`` (trajectories over the contours of the mean loss, with the
Pareto set) and ``bench/results/toy_pareto.json`` (end points and their distance to the Pareto set).

    .venv/bin/python bench/toy_pareto.py [--steps 1000]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from aptrank.apt import toy  # noqa: E402

METHODS = ("ew", "mgda", "pcgrad", "cagrad", "nash_mtl", "imgrad", "sdmgrad", "aligned_mtl")
RESULTS = ROOT / "bench" / "results"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--lr", type=float, default=0.1)
    args = parser.parse_args()

    n = 300
    xs = torch.linspace(-10, 10, n, dtype=torch.float64)
    gx, gy = torch.meshgrid(xs, xs, indexing="xy")
    mean_loss = (
        torch.stack([toy.losses(torch.stack([a, b])) for a, b in zip(gx.reshape(-1), gy.reshape(-1), strict=True)])
        .mean(1)
        .view(n, n)
    )
    front = toy.pareto_front(201)

    cols = 4
    rows = (len(METHODS) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 4 * rows), squeeze=False)
    summary: dict[str, list[dict]] = {}
    for ax, method in zip(axes.flat, METHODS, strict=False):
        ax.contour(gx.numpy(), gy.numpy(), mean_loss.numpy(), levels=20, cmap="viridis", linewidths=0.6)
        ax.plot(front[:, 0], front[:, 1], color="gray", linewidth=5, alpha=0.6, label="Pareto set")
        summary[method] = []
        for init in toy.INITS:
            traj = toy.run(method, init, args.steps, lr=args.lr)
            end = traj[-1]
            dist = toy.front_distance(end)
            summary[method].append({"init": list(init), "end": end.tolist(), "front_distance": dist})
            ax.plot(traj[:, 0], traj[:, 1], linewidth=1.5)
            ax.plot(*init, "ko", markersize=4)
            ax.plot(end[0], end[1], "r*" if dist < 0.02 else "rx", markersize=9)
        reached = sum(r["front_distance"] < 0.02 for r in summary[method])
        ax.set_title(f"{method}: {reached}/3 on the Pareto set")
        ax.set_xlim(-10, 10)
        ax.set_ylim(-10, 10)
        ax.set_aspect("equal")
    for ax in list(axes.flat)[len(METHODS) :]:
        ax.axis("off")
    fig.suptitle(f"Toy problem (CAGrad / Nash-MTL): Adam lr {args.lr}, {args.steps} steps; * = reached")
    fig.tight_layout()
    RESULTS.mkdir(parents=True, exist_ok=True)
    png = RESULTS / "toy_pareto.png"
    fig.savefig(png, dpi=90)
    (RESULTS / "toy_pareto.json").write_text(
        json.dumps({"benchmark": "toy_pareto", "steps": args.steps, "lr": args.lr, "runs": summary}, indent=2) + "\n"
    )
    for method, runs in summary.items():
        dists = ", ".join(f"{r['front_distance']:.4f}" for r in runs)
        print(f"{method:12s} distance to the Pareto set from the 3 starts: {dists}")
    print(f"wrote {png}")


if __name__ == "__main__":
    main()
