"""Command line: ``sr-spatial demo --out demo.zarr``."""

from __future__ import annotations

import argparse
import logging
import shutil
import sys
import time
import warnings
from pathlib import Path

logger = logging.getLogger("sr_spatial")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sr-spatial", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser(
        "demo",
        help="Super-resolve the bundled demo slide and score it against its known truth.",
        description="Generate the synthetic Visium-like demo slide, super-resolve it with the diffusion model "
        "(and the bicubic and nearest baselines), score all three against the hidden high-resolution truth, "
        "and write everything to a zarr store.",
    )
    demo.add_argument("--out", type=Path, default=Path("demo.zarr"), help="zarr store to write (default demo.zarr)")
    demo.add_argument("--config", default="base", help="model size: base (default) or tiny")
    demo.add_argument("--scale", type=int, default=4, help="bins per spot pitch (default 4: 25 µm bins)")
    demo.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    demo.add_argument("--device", default="auto", help="auto (default), cpu, cuda or mps")
    demo.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    demo.add_argument("--quiet", action="store_true", help="no progress bars")
    return parser


def _demo(args: argparse.Namespace) -> int:
    import sr_spatial as sr

    if args.out.exists() and not args.overwrite:
        print(f"{args.out} exists; pass --overwrite to replace it or choose another --out.", file=sys.stderr)
        return 2
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
    if args.out.exists():
        shutil.rmtree(args.out)
    with warnings.catch_warnings():
        # zarr announces a future default on every array written; it says nothing about this store.
        warnings.filterwarnings("ignore", message="zarr v3 autosharding", category=UserWarning)
        sdata.write(args.out)
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
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``sr-spatial`` command."""
    args = _parser().parse_args(argv)
    if args.command == "demo":
        return _demo(args)
    return 1  # pragma: no cover - argparse rejects unknown commands


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
