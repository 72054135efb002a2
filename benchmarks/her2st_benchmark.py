"""Protocol 2c on real ST with H&E (her2st): pool 2x2 spots into pseudo-spots, super-resolve 2x, score at the spots.

Usage::

    python benchmarks/her2st_benchmark.py [--data ../shared/data] [--sections B4 C2] [--seeds 0] [--config base]
        [--methods nearest cubic ...] [--n-genes 50] [--out benchmarks/results/her2st.md]

The data folder comes from ``--data``, else ``$SR_SPATIAL_DATA``, else ``../shared/data`` next to the repository.
Each (section, seed, method family) runs in a fresh child process, so wall time and peak memory (max RSS,
including reading the slide) are its own. Prints a Markdown table and writes it, with the command, seeds and
machine, to ``--out``; per-gene scores go to the same name with ``.csv``, and a figure to ``.png``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import multiprocessing as mp
import os
import platform
import sys
from pathlib import Path

from srbench.her2st import METHODS, SECTIONS, data_root, run_her2st
from srbench.protocol import LABELS as _PROTOCOL_LABELS
from srbench.protocol import figure, run_in_child, runnable, summarise

LABELS = {**_PROTOCOL_LABELS, "nearest": "nearest (own pseudo-spot)"}
# Methods that share one computation run in one child process.
FAMILIES = {
    "nearest": "nearest",
    "cubic": "cubic",
    "cubic_proj": "cubic",
    "ridge": "ridge",
    "ridge_proj": "ridge",
    "sr_spatial": "sr_spatial",
    "sr_spatial_proj": "sr_spatial",
    "sr_spatial_grid_nearest": "grid",
    "sr_spatial_histology": "histology",
    "sr_spatial_histology_learned": "histology_learned",
    "sr_spatial_histology_base": "histology_base",
    "nearest_ridge_detail": "ridge_detail",
    "tesla": "tesla",
    "tesla_proj": "tesla",
}


def _markdown(frame) -> str:
    header = "| section | method | " + " | ".join(frame.columns) + " |"
    rule = "|---|---|" + "---:|" * len(frame.columns)
    lines = [header, rule]
    for (section, method), row in frame.iterrows():
        cells = []
        for col, v in row.items():
            if v != v:
                cells.append("–")
            elif col == "spot_residual":
                cells.append(f"{v:.3f}")
            elif col in ("wall_s", "peak_mib"):
                cells.append(f"{v:.0f}" if v >= 10 else f"{v:.1f}")
            else:
                cells.append(f"{v:.3f}")
        lines.append(f"| {section} | {LABELS.get(method, method)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _render(per_gene, meta: dict, out: Path) -> str:
    """Write the results page ``out`` (table, metadata, figure link, hand-written notes) from per-gene scores."""
    summary = summarise(per_gene, by="section")
    csv, png = out.with_suffix(".csv"), out.with_suffix(".png")
    figure(
        per_gene,
        png,
        by="section",
        labels=LABELS,
        titles={
            "pearson": "her2st {name}: at the measured spots",
            "pearson_within": "her2st {name}: within pseudo-spots (detail the pooling removed)",
        },
    )
    notes = out.with_name(out.stem + "_notes.md")
    text = (
        "# Real ST with H&E (her2st): 2x2 pseudo-spots super-resolved back to the measured spots\n\n"
        "Protocol 2c: legacy ST spots (100 µm, 200 µm square lattice) are pooled 2x2 on the array lattice into "
        "pseudo-spots (raw counts summed, as a 400 µm-pitch measurement would count them; edge blocks pool the "
        "1-3 spots they hold); every method predicts the measured spots from the pseudo-spots and the H&E; "
        "scores are in log-normalised units (counts per 10^4, log1p) against each measured spot. `pearson`: per "
        "gene across spots, then averaged over genes (and seeds; `pearson_sd` is its spread across seeds); "
        "`pearson_within`: per-gene correlation of deviations from the pseudo-spot mean over the blocks that pool "
        "2-4 spots, i.e. only the detail the pooled measurement does not fix (undefined for `nearest`, which has "
        "none); `ssim` on the array lattice; `rmse`; `spot_residual`: relative disagreement of the spots' mean "
        "with their pseudo-spot (linear units, 0 = consistent); `coverage_90`: fraction of measured spots inside "
        "the method's central 90 % interval (mean ± 1.645 sd; methods that report a spread); `sd_error_spearman`: "
        "rank correlation of the reported sd with the absolute error, per gene; `wall_s`: the method's time "
        "(sr_spatial: training and sampling); `peak_mib`: the child process's max RSS, reading the slide included. "
        "`+ projection` rescales each pseudo-spot's spots so that they average exactly to it.\n\n"
        f"Command: `{meta['command']}`  \n"
        f"Data: her2st sections {meta['sections']} (`$SR_SPATIAL_DATA/her2st`, here `{meta['root']}/her2st`; "
        "Andersson et al. 2021)  \n"
        f"Seeds: {meta['seeds']} (sr_spatial model; the other methods are deterministic and run once)  \n"
        f"Model config: `{meta['config']}`, scale 2; genes: top {meta['n_genes']} by mean log-normalised "
        f"expression of the pseudo-spots  \nMachine: {meta['machine']}  \nDate: {meta['date']}\n\n"
        f"{_markdown(summary)}\n\n"
        + "".join(f"Not run: {m} ({why}).\n\n" for m, why in meta.get("skipped", {}).items())
        + f"Per-gene scores: `{csv.name}`.\n\n![Per-gene Pearson r by method and section]({png.name})\n"
    )
    if notes.exists():
        text += "\n" + notes.read_text()
    out.write_text(text)
    return text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=None, help="folder holding her2st/ (default $SR_SPATIAL_DATA)")
    parser.add_argument("--sections", nargs="+", default=list(SECTIONS))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--config", default="base")
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument("--n-genes", type=int, default=50)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "her2st.md")
    parser.add_argument(
        "--render-only", action="store_true", help="rewrite the page and figure from the saved CSV, running nothing"
    )
    args = parser.parse_args()

    import pandas as pd

    csv, meta_path = args.out.with_suffix(".csv"), args.out.with_suffix(".run.json")
    if args.render_only:
        print(_render(pd.read_csv(csv), json.loads(meta_path.read_text()), args.out))
        return

    root = data_root(args.data)
    if not (root / "her2st").is_dir():
        print(
            f"No her2st data under {root}; this protocol needs real ST. Run `python benchmarks/demo_accuracy.py` for "
            "the synthetic demo, or pass --data / set $SR_SPATIAL_DATA.",
            file=sys.stderr,
        )
        sys.exit(2)

    import torch

    args.methods, skipped = runnable(args.methods)

    frames = []
    for section in args.sections:
        for seed in args.seeds:
            families = {}
            for method in args.methods:
                families.setdefault(FAMILIES[method], []).append(method)
            for family, methods in families.items():
                # Only the model depends on the seed; the other methods run once, under the first seed.
                if seed != args.seeds[0] and family != "sr_spatial":
                    continue
                frame = run_in_child(
                    run_her2st,
                    section=section,
                    methods=methods,
                    config=args.config,
                    seed=seed,
                    n_genes=args.n_genes,
                    root=str(root),
                )
                frames.append(frame)
                summary = frame.groupby("method").mean(numeric_only=True)
                print(json.dumps({section: summary[["pearson", "wall_s"]].round(3).to_dict()}), file=sys.stderr)

    per_gene = pd.concat(frames, ignore_index=True)
    load = os.getloadavg()
    meta = {
        "command": ("python benchmarks/her2st_benchmark.py " + " ".join(sys.argv[1:])).strip(),
        "sections": args.sections,
        "seeds": args.seeds,
        "config": args.config,
        "n_genes": args.n_genes,
        "root": str(root),
        "machine": (
            f"{platform.machine()}, {mp.cpu_count()} CPU cores (shared with other jobs; load average at the end "
            f"{load[0]:.1f}/{load[1]:.1f}/{load[2]:.1f}), no GPU, torch {torch.__version__} "
            f"with OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}; "
            f"Python {platform.python_version()}"
        ),
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "skipped": skipped,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    per_gene.to_csv(csv, index=False, float_format="%.5g")
    meta_path.write_text(json.dumps(meta, indent=1) + "\n")
    print(_render(per_gene, meta, args.out))


if __name__ == "__main__":
    main()
