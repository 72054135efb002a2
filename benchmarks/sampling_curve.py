"""Accuracy and time of sampling against the number of draws and DDIM steps, on the demo slide.

Usage::

    python benchmarks/sampling_curve.py [--config base] [--seed 0] [--out benchmarks/results/sampling_curve.md]

Trains one model on the demo slide, then samples it with each combination of draws and steps, projects the draws
onto the spots and scores the mean against the truth. Prints a Markdown table and writes it to ``--out``.
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="base")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--draws", type=int, nargs="+", default=[1, 4, 8, 16])
    parser.add_argument("--steps", type=int, nargs="+", default=[10, 25, 50])
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "sampling_curve.md")
    args = parser.parse_args()

    import warnings

    warnings.filterwarnings("ignore")
    import numpy as np
    import torch

    import sr_spatial as sr
    from sr_spatial.tl import output_scene, regrid_to

    sdata = sr.datasets.demo(seed=args.seed)
    image = "demo_full_image"
    start = time.perf_counter()
    model = sr.tl.train(sdata, image, config=args.config, seed=args.seed, show_progress_bar=False)
    train_s = time.perf_counter() - start
    st_map = sr.pp.build_st_map(sdata, image, genes=model.genes, scale=model.scale)
    scene = output_scene(st_map, px_per_bin=model.config.px_per_bin)
    sr.tl.superresolve(sdata, image, method="nearest", key_added="grid", show_progress_bar=False)
    truth = regrid_to(sdata, "demo_truth", "grid", channels=model.genes)
    mask = st_map.mask

    lines = ["| draws | DDIM steps | Pearson r | RMSE | sampling s |", "|---:|---:|---:|---:|---:|"]
    for draws in args.draws:
        for steps in args.steps:
            tic = time.perf_counter()
            samples = model.sample(scene, n_samples=draws, steps=steps, seed=args.seed, show_progress_bar=False)
            elapsed = time.perf_counter() - tic
            projected = sr.tl.project_to_spots(samples, st_map.footprint, st_map.values)
            mean = np.log1p(np.expm1(projected.astype(np.float64)).mean(axis=0))
            r = np.mean([np.corrcoef(mean[g][mask], truth[g][mask])[0, 1] for g in range(len(model.genes))])
            rmse = np.mean([np.sqrt(np.mean((mean[g][mask] - truth[g][mask]) ** 2)) for g in range(len(model.genes))])
            lines.append(f"| {draws} | {steps} | {r:.3f} | {rmse:.3f} | {elapsed:.1f} |")
            print(lines[-1], file=sys.stderr)
    machine = (
        f"{platform.machine()}, {torch.get_num_threads()} torch threads, torch {torch.__version__}, "
        f"CUDA {'yes' if torch.cuda.is_available() else 'no'}"
    )
    text = (
        "# Sampling: draws and DDIM steps against accuracy and time (demo slide, 4x)\n\n"
        f"Command: `python benchmarks/sampling_curve.py {' '.join(sys.argv[1:])}`  \n"
        f"Seed: {args.seed} (demo and model); model `{args.config}` trained once in {train_s:.0f} s  \n"
        f"Machine: {machine}; {int(mask.sum())} bins x {len(model.genes)} genes\n\n"
        "Mean per-gene Pearson r and RMSE of the projected posterior mean against the truth; wall time of "
        "`DiffST.sample` alone.\n\n" + "\n".join(lines) + "\n"
    )
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)


if __name__ == "__main__":
    main()
