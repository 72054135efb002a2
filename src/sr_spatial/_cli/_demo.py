"""``sr-spatial demo``: every method on the synthetic demo slide, scored against its known truth."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from sr_spatial._cli._atomic import write_store
from sr_spatial._cli._common import Formatter, check_not_in_store, check_out, zarr_notice_hidden

DEMO_DESCRIPTION = """\
Generate the synthetic Visium-like demo slide (55 µm spots on a 100 µm lattice, 30 genes, with its hidden
high-resolution truth), super-resolve it 4x with the default histology method, the diffusion model and the
nearest-spot and bicubic baselines, score all four against the truth, and write everything to a zarr store."""


def add_parser(sub) -> None:
    """Add the command and its options to the ``sr-spatial`` parser's subcommands."""
    demo = sub.add_parser(
        "demo",
        help="super-resolve the bundled demo slide with every method and score them against its known truth",
        description=DEMO_DESCRIPTION,
        formatter_class=Formatter,
    )
    demo.add_argument("--out", type=Path, default=Path("demo.zarr"), help="zarr store to write")
    demo.add_argument("--config", default="base", help="diffusion model size: base or tiny (seconds, less accurate)")
    demo.add_argument("--scale", type=int, default=4, help="bins per spot pitch (4: 25 µm bins)")
    demo.add_argument("--seed", type=int, default=0, help="random seed")
    demo.add_argument("--device", default="auto", help="auto, cpu, cuda or mps")
    demo.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    demo.add_argument("--quiet", action="store_true", help="no progress bars")


def run(args: argparse.Namespace) -> int:
    """Run the command; 0 on success."""
    import sr_spatial as sr

    check_not_in_store(args.out, "--out")
    check_out(args.out, overwrite=args.overwrite)
    start = time.perf_counter()
    print("Generating the demo slide (synthetic Visium, 55 µm spots on a 100 µm hexagonal lattice) ...")
    sdata = sr.datasets.demo(seed=args.seed)
    image = "demo_full_image"
    scores = {}
    for method in ("nearest", "bicubic", "histology", "diffusion"):
        key = f"superres_{method}"
        if method == "histology":
            print("Fitting the histology predictor (morphology features, weights on held-out spots) ...")
        if method == "diffusion":
            print(f"Training the diffusion model ({args.config}) on the slide and sampling ...")
        sr.tl.superresolve(
            sdata,
            image,
            method=method,
            scale=args.scale,
            config=args.config,
            device=args.device,
            seed=args.seed,
            key_added=key,
            show_progress_bar=not args.quiet,
        )
        scores[method] = sr.tl.evaluate(sdata, key, truth_key="demo_truth").mean()
    with zarr_notice_hidden():
        write_store(sdata, args.out, replace=args.overwrite)
    elapsed = time.perf_counter() - start

    table = sdata.tables["superres_diffusion_table"]
    info = table.uns["superres_diffusion"]
    bin_um = info["bin_size_px"] * sdata.tables["table"].uns["demo"]["microns_per_pixel"]
    print()
    print(f"Accuracy against the demo's true {bin_um:.0f} µm expression map (mean over {table.n_vars} genes):")
    print(f"  {'method':<10} {'pearson r':>10} {'SSIM':>8} {'RMSE':>8} {'spot residual':>14}")
    for method, row in scores.items():
        print(
            f"  {method:<10} {row['pearson']:>10.3f} {row['ssim']:>8.3f} {row['rmse']:>8.3f} "
            f"{row['spot_residual']:>14.2e}"
        )
    print()
    print(
        f"Wrote {args.out.resolve()} in {elapsed:.0f} s. It holds the demo slide and, per method M in "
        f"{'/'.join(scores)}:"
    )
    print(
        f"  images['superres_M']        genes x bins expression map ({table.n_vars} channels) over the H&E, "
        "NaN outside the tissue"
    )
    print("  images['superres_M_std']    per-bin standard deviation (the uncertainty), NaN outside the tissue")
    print(f"  shapes['superres_M_bins']   {table.n_obs} square bins in the tissue")
    print("  tables['superres_M_table']  AnnData, one row per bin (X, layers['std'], obsm['spatial'])")
    print("Open it with: import spatialdata as sd; sdata = sd.read_zarr(" + repr(str(args.out)) + ")")
    print("Your own slide: sr-spatial superresolve SLIDE.zarr (see sr-spatial superresolve --help)")
    return 0
