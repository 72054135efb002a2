"""Scale transfer against training on a high-resolution reference, scored on tissue the reference did not see.

Usage::

    python benchmarks/reference_training.py [--config tiny] [--seed 0] [--bin-um 25] [--out ...]

The demo slide (Visium-like spots, 100 µm pitch) is super-resolved 4x (25 µm bins) three ways: cubic
interpolation, a model trained on the slide itself by scale transfer, and a model trained with
``reference=True`` on true pairs from high-resolution bins (Poisson counts of ``--bin-um`` squares drawn from the
demo's hidden truth, like binned Xenium transcripts or Visium HD bins) that cover only the left half of the
tissue. Scores (mean per-gene Pearson r and RMSE against the truth) are taken on the right half only, where the
reference saw nothing. Prints a Markdown table and writes it to ``--out``.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

from srbench.reference import reference_slide


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="tiny")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--bin-um", type=float, default=25.0)
    parser.add_argument("--umis-per-um2", type=float, default=0.5)
    parser.add_argument("--n-samples", type=int, default=8)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "reference_training.md")
    args = parser.parse_args()

    import warnings

    warnings.filterwarnings("ignore")
    import numpy as np
    import torch

    import sr_spatial as sr
    from sr_spatial.tl import regrid_to

    scale = 4
    image = "demo_full_image"
    sdata = sr.datasets.demo(seed=args.seed)
    genes = sdata.tables["table"].var_names.tolist()
    spots = sdata.tables["table"].obsm["spatial"]
    split_px = float(np.median(spots[:, 0]))
    ref = reference_slide(sdata, bin_um=args.bin_um, split_px=split_px, umis_per_um2=args.umis_per_um2, seed=args.seed)
    common = {"genes": genes, "config": args.config, "seed": args.seed, "show_progress_bar": False}

    rows, timings = [], {}
    tic = time.perf_counter()
    transfer = sr.tl.train(sdata, image, scale=scale, **common)
    timings["scale transfer"] = time.perf_counter() - tic
    tic = time.perf_counter()
    reference = sr.tl.train(ref, "he", table_key="t", reference=True, scale=scale, **common)
    timings["reference"] = time.perf_counter() - tic
    n_ref_bins = ref.tables["t"].n_obs

    runs = {
        "bicubic": {"method": "bicubic"},
        "diffusion, scale transfer on the slide": {"model": transfer},
        f"diffusion, reference ({args.bin_um:g} µm bins, left half)": {"model": reference},
    }
    for name, kwargs in runs.items():
        key = f"k{len(rows)}"
        sr.tl.superresolve(
            sdata,
            image,
            scale=scale,
            key_added=key,
            n_samples=args.n_samples,
            seed=args.seed,
            show_progress_bar=False,
            **kwargs,
        )
        table = sdata.tables[f"{key}_table"]
        out_genes = table.var_names.tolist()
        pred = np.asarray(sdata.images[key].sel(c=out_genes).values)
        truth = regrid_to(sdata, "demo_truth", key, channels=out_genes)
        grid = sdata.tables[f"{key}_table"]
        mask = np.zeros(pred.shape[1:], dtype=bool)
        mask[grid.obs["array_row"].to_numpy(), grid.obs["array_col"].to_numpy()] = True
        right = grid.obsm["spatial"][:, 0] >= split_px
        held_out = np.zeros_like(mask)
        held_out[grid.obs["array_row"].to_numpy()[right], grid.obs["array_col"].to_numpy()[right]] = True
        r = np.nanmean([np.corrcoef(pred[g][held_out], truth[g][held_out])[0, 1] for g in range(len(out_genes))])
        rmse = np.mean([np.sqrt(np.mean((pred[g][held_out] - truth[g][held_out]) ** 2)) for g in range(len(out_genes))])
        rows.append(f"| {name} | {r:.3f} | {rmse:.3f} | {int(held_out.sum())} |")
        print(rows[-1], file=sys.stderr)

    machine = (
        f"{platform.machine()}, {os.cpu_count()} CPUs, {torch.get_num_threads()} torch threads, torch "
        f"{torch.__version__}, CUDA {'yes' if torch.cuda.is_available() else 'no'}; load average "
        f"{os.getloadavg()[0]:.1f} at the end (other jobs shared the machine, so times are inflated)"
    )
    text = (
        "# Scale transfer against a high-resolution reference (demo slide, 4x, held-out half)\n\n"
        f"Command: `python benchmarks/reference_training.py {' '.join(sys.argv[1:])}`  \n"
        f"Seed: {args.seed} (demo, reference counts, models, sampling); model `{args.config}`; "
        f"{args.n_samples} draws  \n"
        f"Reference: {n_ref_bins} bins of {args.bin_um:g} µm, {args.umis_per_um2:g} UMIs/µm² of tissue, left of "
        f"x = {split_px:.0f} px; training took {timings['reference']:.0f} s (scale transfer: "
        f"{timings['scale transfer']:.0f} s)  \n"
        f"Machine: {machine}\n\n"
        "Mean per-gene Pearson r and RMSE of the super-resolved map against the truth (box-averaged to the bins), "
        "on the bins right of the split only.\n\n"
        "| method | Pearson r | RMSE | bins scored |\n|---|---:|---:|---:|\n" + "\n".join(rows) + "\n"
    )
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)


if __name__ == "__main__":
    main()
