"""Learning super-resolution from a reference slide (issue 25) on the synthetic demo, scored against its truth.

Usage::

    python benchmarks/demo_reference.py [--config tiny] [--reference-seed 1] [--methods ...]
        [--umis-per-um2 0.5] [--out benchmarks/results/demo_reference.md]

The target is the demo slide (``sr.datasets.demo(seed=0)``, Visium-like 55 µm spots on a 100 µm lattice),
super-resolved 4x to 25 µm bins as usual. The reference is another demo slide (``--reference-seed``): its hidden
truth measured by 25 µm spots on a 25 µm square lattice, i.e. spots at the output's scale (circles of their
true 12.5 µm radius, Poisson counts of the truth under each disk, ``srbench.reference.reference_slide`` with
``footprint="disk"``), with its own H&E. Rows: ``nearest`` (each bin its spot's value, the floor), the
single-slide default (``superresolve`` without a model, ``method="histology"``), and
``sr.tl.train([ref], image_key=["he"], reference=True, target=target, scale=4, genes=genes, seed=seed,
method=m, config=config)`` then ``superresolve(target, model=model)`` for ``m`` in histology / diffusion (and
histology with ``config={"learned_encoder": True}``); those rows print "not available" while that API is missing.
Scores: :func:`sr_spatial.tl.evaluate` against the demo truth, as ``demo_accuracy.py`` does.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from srbench.report import machine, markdown_table

METHODS = ("nearest", "histology", "reference_histology", "reference_histology_learned", "reference_diffusion")
LABELS = {
    "nearest": "nearest (own spot)",
    "histology": "single slide, method='histology' (default, no model)",
    "reference_histology": "reference, method='histology'",
    "reference_histology_learned": "reference, method='histology', learned_encoder=True",
    "reference_diffusion": "reference, method='diffusion' ({config})",
}
IMAGE = "demo_full_image"
SCALE = 4


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="tiny", help="model configuration of the reference rows (tiny, base)")
    parser.add_argument("--seed", type=int, default=0, help="target demo slide, models and sampling")
    parser.add_argument("--reference-seed", type=int, default=1)
    parser.add_argument("--umis-per-um2", type=float, default=0.5)
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "demo_reference.md")
    args = parser.parse_args()

    import warnings

    warnings.filterwarnings("ignore")
    import pandas as pd
    from srbench.reference import reference_slide

    import sr_spatial as sr

    genes = None
    source = sr.datasets.demo(seed=args.reference_seed)
    bin_um = source.tables["table"].uns["demo"]["spot_spacing_um"] / SCALE
    ref = reference_slide(
        source, bin_um=bin_um, split_px=None, umis_per_um2=args.umis_per_um2, seed=args.reference_seed, footprint="disk"
    )
    rows, status = {}, {}
    for method in args.methods:
        target = sr.datasets.demo(seed=args.seed)
        genes = target.tables["table"].var_names.tolist()
        start = time.perf_counter()
        try:
            if method in ("nearest", "histology"):
                sr.tl.superresolve(
                    target, IMAGE, scale=SCALE, method=method, genes=genes, seed=args.seed, key_added="sr"
                )
            else:
                model = sr.tl.train(
                    [ref],
                    image_key=["he"],
                    reference=True,
                    target=target,
                    scale=SCALE,
                    genes=genes,
                    seed=args.seed,
                    method=method.removeprefix("reference_").removesuffix("_learned"),
                    config={"learned_encoder": True} if method.endswith("_learned") else args.config,
                )
                sr.tl.superresolve(
                    target, image_key=IMAGE, scale=SCALE, model=model, genes=genes, seed=args.seed, key_added="sr"
                )
        except (TypeError, NotImplementedError) as err:
            if not method.startswith("reference_"):
                raise
            status[method] = f"not available ({type(err).__name__}: {err})"
            print(f"{method}: {status[method]}", file=sys.stderr)
            continue
        wall = time.perf_counter() - start
        scores = sr.tl.evaluate(target, "sr", truth_key="demo_truth").mean(numeric_only=True)
        rows[method] = {**scores.to_dict(), "wall_s": wall}
        print(f"{method}: pearson {rows[method]['pearson']:.3f} ({wall:.0f} s)", file=sys.stderr)

    columns = ["pearson", "ssim", "rmse", "spot_residual", "coverage_90", "sd_error_spearman", "wall_s"]
    frame = pd.DataFrame.from_dict(rows, orient="index").reindex(columns=columns)
    frame.index = [LABELS[m].format(config=args.config) for m in frame.index]
    load = os.getloadavg()
    n_ref = ref.tables["table"].n_obs
    text = (
        "# Demo slide super-resolved from a reference slide (issue 25)\n\n"
        f"Target: `sr.datasets.demo(seed={args.seed})`, 4x (25 µm bins). Reference: "
        f"`sr.datasets.demo(seed={args.reference_seed})`'s truth measured by {n_ref} spots of {bin_um:g} µm "
        f"diameter on a {bin_um:g} µm square lattice (circles of their true radius, Poisson counts of the truth "
        f"under each disk at {args.umis_per_um2:g} UMIs/µm² of tissue) with its own H&E. Mean over "
        f"{len(genes or [])} genes of per-gene scores from `sr.tl.evaluate` against the target's truth averaged "
        "onto each output bin (as `demo_accuracy.py`); `coverage_90` and `sd_error_spearman` for maps with a "
        "spread; wall time of training and `superresolve`.\n\n"
        f"Command: `{('python benchmarks/demo_reference.py ' + ' '.join(sys.argv[1:])).strip()}`  \n"
        f"Seeds: target, models and sampling {args.seed}; reference slide and its counts {args.reference_seed}; "
        f"reference model config `{args.config}`  \n"
        f"Machine: {machine()}; shared with other jobs, load average at the end {load[0]:.1f}/{load[1]:.1f}/"
        f"{load[2]:.1f}; OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}\n\n"
        f"{markdown_table(frame, index_name='method')}\n\n"
        + "".join(f"{LABELS[m].format(config=args.config)}: {why}.\n\n" for m, why in status.items())
    )
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)


if __name__ == "__main__":
    main()
