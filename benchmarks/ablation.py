"""Ablation of the paper's modules: the full model, each module switched off, and the first version.

Usage::

    python benchmarks/ablation.py --data demo [--config base] [--seeds 0 1] [--variants full no_cmam ...]
    python benchmarks/ablation.py --data her2st [--sections B4 C2] [--config base] [--seeds 0]

``demo``: the synthetic slide, scored against its hidden truth at the output resolution (25 µm bins).
``her2st``: the real HER2+ sections in ``$SR_SPATIAL_DATA`` or ``../shared/data`` (2x2 pseudo-spots → 2x →
scored at the measured spots; see ``benchmarks/srbench/her2st.py``). Each run is a fresh child process, so peak
memory (max RSS) and wall time are its own. Prints a Markdown table and writes it, with the command, seeds,
machine and load average, to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import resource
import sys
import time
from pathlib import Path

from srbench.report import machine, markdown_table

RESULTS = Path(__file__).parent / "results"
LABELS = {
    "full": "full model (CMAM + cross-attention + gene graph)",
    "no_cmam": "without CMAM",
    "no_cross_attention": "without dynamic cross-attention",
    "no_gene_graph": "without gene graph (GCGN)",
    "first_version": "first version (no module)",
}


def _run_demo(variant: str, config: str, seed: int, queue) -> None:
    import warnings

    warnings.filterwarnings("ignore")
    import sr_spatial as sr
    from sr_spatial.model import ABLATIONS, resolve_config

    sdata = sr.datasets.demo(seed=seed)
    start = time.perf_counter()
    config = resolve_config(config, **ABLATIONS[variant])
    model = sr.tl.train(sdata, "demo_full_image", config=config, seed=seed, show_progress_bar=False)
    sr.tl.superresolve(sdata, "demo_full_image", model=model, seed=seed, key_added="out", show_progress_bar=False)
    wall = time.perf_counter() - start
    scores = sr.tl.evaluate(sdata, "out", truth_key="demo_truth").mean()
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    queue.put({"variant": variant, "seed": seed, "wall_s": wall, "peak_mib": peak_mib, **scores.to_dict()})


def _run_her2st(variant: str, config: str, seed: int, section: str, queue) -> None:
    import warnings

    warnings.filterwarnings("ignore")
    sys.path.insert(0, str(Path(__file__).parent))
    from srbench.her2st import load_section, run_her2st

    from sr_spatial.model import ABLATIONS, resolve_config

    data = load_section(section)
    start = time.perf_counter()
    frame = run_her2st(data, methods=("sr_spatial",), config=resolve_config(config, **ABLATIONS[variant]), seed=seed)
    wall = time.perf_counter() - start
    scores = frame.mean(numeric_only=True).drop(labels=["wall_s", "seed"], errors="ignore")
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    queue.put(
        {"variant": variant, "seed": seed, "section": section, "wall_s": wall, "peak_mib": peak_mib, **scores.to_dict()}
    )


def main() -> None:
    from sr_spatial.model import ABLATIONS

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", choices=["demo", "her2st"], default="demo")
    parser.add_argument("--config", default="base")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--sections", nargs="+", default=["B4", "C2"])
    parser.add_argument("--variants", nargs="+", default=list(ABLATIONS), choices=list(ABLATIONS))
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    out = args.out or RESULTS / f"ablation_{args.data}.md"

    ctx = mp.get_context("spawn")
    rows, loads = [], []
    jobs = [
        (variant, seed, section)
        for seed in args.seeds
        for section in (args.sections if args.data == "her2st" else [None])
        for variant in args.variants
    ]
    for variant, seed, section in jobs:
        queue = ctx.Queue()
        if args.data == "demo":
            proc = ctx.Process(target=_run_demo, args=(variant, args.config, seed, queue))
        else:
            proc = ctx.Process(target=_run_her2st, args=(variant, args.config, seed, section, queue))
        proc.start()
        rows.append(queue.get())
        proc.join()
        loads.append(os.getloadavg()[0])
        print(json.dumps(rows[-1]), file=sys.stderr)

    import pandas as pd

    frame = pd.DataFrame(rows)
    columns = [c for c in ("pearson", "pearson_within", "ssim", "rmse", "spot_residual") if c in frame]
    summary = frame.groupby("variant", sort=False)[columns].mean()
    summary["wall_s"] = frame.groupby("variant", sort=False)["wall_s"].mean()
    summary["peak_mib"] = frame.groupby("variant", sort=False)["peak_mib"].max()
    summary.index = [LABELS[v] for v in summary.index]
    command = "python benchmarks/ablation.py " + " ".join(sys.argv[1:])
    data = (
        "demo slide (synthetic, 4x: 100 µm pitch → 25 µm bins), scored against its hidden truth"
        if args.data == "demo"
        else f"her2st sections {args.sections} (2x2 pseudo-spots → 2x → scored at the measured spots)"
    )
    per_run = frame.to_csv(index=False, float_format="%.4f")
    text = (
        f"# Ablation on the {args.data} data\n\n"
        f"Command: `{command.strip()}`  \nData: {data}  \nConfig: `{args.config}`; seeds: {args.seeds}  \n"
        f"Machine: {machine()}; 1-minute load average after each run: {[round(x, 1) for x in loads]} "
        f"(above 2 means other work shared the 2 cores, inflating wall times)\n\n"
        f"Mean over genes (and runs) of per-gene Pearson r, SSIM and RMSE; `spot_residual` is the relative "
        f"disagreement with the measured spots; wall time of training and `superresolve`; peak memory is the "
        f"child process's max RSS.\n\n{markdown_table(summary, index_name='variant')}\n\n"
        f"Per run:\n\n```\n{per_run}```\n"
    )
    print(text)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)


if __name__ == "__main__":
    main()
