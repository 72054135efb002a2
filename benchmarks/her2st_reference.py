"""Learning super-resolution from other sections (issue 25) on her2st, against a noise ceiling.

Usage::

    python benchmarks/her2st_reference.py [--data ../shared/data] [--sections B4 C2 C3] [--methods ...]
        [--n-genes 50] [--seed 0] [--out benchmarks/results/her2st_reference.md]

Each target section is pooled 2x2 into pseudo-spots (circles over the pooled spots, :mod:`srbench.her2st`); the
references are the other sections as measured (one RGB image, circles of the spots' true 50 µm radius, raw
counts), whose spots sit at the output's scale (200 µm pitch at ``scale=2``). Methods, scored at the target's
measured spots (per-gene Pearson r, averaged over the harness's genes):

- ``nearest``: each spot's own pseudo-spot value;
- ``ridge_peer``: own pseudo-spot value plus a ridge on the package's morphology features fitted on the
  references' within-block deviations (:func:`srbench.her2st_reference.ridge_peer`);
- ``histology``: the single-slide default, ``superresolve(method="histology")`` without a model;
- ``reference_histology`` / ``reference_diffusion``: ``sr.tl.train(refs, ..., reference=True, target=target,
  method=m)`` then ``superresolve(target, model=model)``; rows print "not available" while that API is missing;
- ``reference_histology_learned``: the same with ``config={"learned_encoder": True}`` (an encoder per reference,
  trained on the others).

The noise ceiling (:func:`srbench.her2st_reference.noise_ceiling`) bounds what any method can show in
``pearson_within``. Writes the page ``--out`` (command, machine, load) and the per-gene scores next to it (``.csv``).
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import sys
import time
from pathlib import Path

METHODS = (
    "nearest",
    "ridge_peer",
    "histology",
    "reference_histology",
    "reference_histology_learned",
    "reference_diffusion",
)
LABELS = {
    "nearest": "own pseudo-spot (nearest)",
    "ridge_peer": "ridge peer (other sections' detail on morphology features)",
    "histology": "single slide, method='histology' (default, no model)",
    "reference_histology": "reference, method='histology'",
    "reference_histology_learned": "reference, method='histology', learned_encoder=True",
    "reference_diffusion": "reference, method='diffusion'",
}
SECTIONS = ("B4", "C2", "C3")
NOISE_SEEDS = 10


def _superresolved(sr, target, genes, data, seed, model=None):
    """``superresolve`` on the pseudo-spot slide, read at the measured spots: ``(mean, sd)``."""
    from srbench.protocol import sample_disks

    if model is None:
        sr.tl.superresolve(target, "he", scale=2, method="histology", genes=genes, seed=seed, key_added="sr")
    else:
        sr.tl.superresolve(target, image_key="he", scale=2, model=model, genes=genes, seed=seed, key_added="sr")
    cs = f"her2st_{data.name}"
    std = sample_disks(target, "sr_std", genes, data.centres, 0.0, cs) if "sr_std" in target.images else None
    return sample_disks(target, "sr", genes, data.centres, 0.0, cs), std


def run_section(name: str, loaded: dict, methods, *, n_genes: int, seed: int):
    """Scores of every method on target ``name`` (per-gene rows), its noise ceiling and each row's status."""
    import numpy as np
    from srbench.her2st import pseudo_spot_sdata, select_genes
    from srbench.her2st_reference import block_deviation, noise_ceiling, reference_sdata, ridge_peer
    from srbench.protocol import lognorm, score_per_gene

    import sr_spatial as sr

    data, pseudo = loaded[name]
    genes = select_genes(data, pseudo, n_genes=n_genes)
    truth, own, _ = block_deviation(data, pseudo, genes)
    pooled = lognorm(pseudo.counts.astype(np.float64), data.genes.get_indexer(genes))
    ceilings = [noise_ceiling(data, pseudo, genes, seed=s) for s in range(seed, seed + NOISE_SEEDS)]
    noise = {
        "r_half": ceilings[0]["r_half"],
        "signal_fraction": ceilings[0]["signal_fraction"],
        "within_ceiling": ceilings[0]["within_ceiling"],
        "r_half_mean": float(np.mean([c["r_half"] for c in ceilings])),
        "r_half_sd": float(np.std([c["r_half"] for c in ceilings])),
        "signal_fraction_mean": float(np.mean([c["signal_fraction"] for c in ceilings])),
        "n_spots": ceilings[0]["n_spots"],
    }
    others = [s for s in loaded if s != name]
    rows, status = [], {}
    for method in methods:
        start = time.perf_counter()
        std = None
        try:
            if method == "nearest":
                pred = own
            elif method == "ridge_peer":
                pred = ridge_peer(loaded[name], [loaded[s] for s in others], genes)
            elif method == "histology":
                pred, std = _superresolved(sr, pseudo_spot_sdata(data, pseudo), genes, data, seed)
            else:
                m = method.removeprefix("reference_").removesuffix("_learned")
                config = {"config": {"learned_encoder": True}} if method.endswith("_learned") else {}
                target = pseudo_spot_sdata(data, pseudo)
                refs = [reference_sdata(loaded[s][0]) for s in others]
                keys = ["he"] * len(refs)
                model = sr.tl.train(
                    refs, image_key=keys, reference=True, target=target, scale=2, genes=genes, seed=seed, method=m,
                    **config,
                )  # fmt: skip
                pred, std = _superresolved(sr, target, genes, data, seed, model=model)
        except (TypeError, NotImplementedError) as err:
            if not method.startswith("reference_"):
                raise
            status[method] = f"not available ({type(err).__name__}: {err})"
            print(f"{name} {method}: {status[method]}", file=sys.stderr)
            continue
        wall = time.perf_counter() - start
        status[method] = f"refs {'+'.join(others)}" if method in ("ridge_peer", *METHODS[3:]) else "ok"
        scores = score_per_gene(
            pred, truth, lattice=data.array, group=pseudo.group, pooled=pooled, genes=genes, std=std
        )
        for row in scores:
            row.update(section=name, method=method, wall_s=wall)
            rows.append(row)
    return rows, noise, status


def _render(per_gene, noise: dict, status: dict, meta: dict) -> str:
    import numpy as np

    lines = [
        "| section | method | pearson | Δ vs own pseudo-spot | pearson_within | coverage_90 | wall_s | note |",
        "|---|---|---:|---:|---:|---:|---:|---|",
    ]
    for section in meta["sections"]:
        sub = per_gene[per_gene["section"] == section] if len(per_gene) else per_gene
        means = sub.groupby("method").mean(numeric_only=True) if len(sub) else None
        base = means.loc["nearest", "pearson"] if means is not None and "nearest" in means.index else np.nan

        def cell(v, fmt="{:.3f}"):
            return "–" if v != v else fmt.format(v)

        for method in meta["methods"]:
            note = status[section].get(method, "")
            if means is None or method not in means.index:
                lines.append(f"| {section} | {LABELS[method]} | – | – | – | – | – | {note} |")
                continue
            m = means.loc[method]
            wall = cell(m["wall_s"], "{:.1f}")
            lines.append(
                f"| {section} | {LABELS[method]} | {cell(m['pearson'])} | {cell(m['pearson'] - base, '{:+.3f}')} | "
                f"{cell(m['pearson_within'])} | {cell(m['coverage_90'])} | {wall} | {note} |"
            )
    noise_lines = [
        "| section | spots in blocks of 2-4 | split-half r (seed "
        f"{meta['seed']}) | signal fraction 2r/(1+r) | ceiling on pearson_within √fraction | split-half r, "
        f"{NOISE_SEEDS} splits (mean ± sd) | signal fraction, {NOISE_SEEDS} splits |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for section in meta["sections"]:
        n = noise[section]
        noise_lines.append(
            f"| {section} | {n['n_spots']} | {n['r_half']:.3f} | {n['signal_fraction']:.3f} | "
            f"{n['within_ceiling']:.3f} | {n['r_half_mean']:.3f} ± {n['r_half_sd']:.3f} | "
            f"{n['signal_fraction_mean']:.3f} |"
        )
    return (
        "# her2st: learning super-resolution from other sections (issue 25)\n\n"
        "Each target section's measured spots (100 µm disks, 200 µm square lattice) are pooled 2x2 into "
        "pseudo-spots (raw counts summed; circles at the block centre enclosing the four spots, 400 µm pitch); "
        "the references are the other sections as measured (their H&E, circles of the spots' true 50 µm radius, "
        "raw counts): spots at the output's scale (`scale=2`). Scores at the target's measured spots, in "
        "log-normalised units (counts per 10^4, log1p), per gene then averaged over the top "
        f"{meta['n_genes']} genes by mean expression of the target's pseudo-spots (the her2st harness's genes). "
        "`pearson_within`: the correlation of deviations from the block mean (blocks of 2-4 spots), i.e. the "
        "detail the pooled measurement lacks; `coverage_90`: fraction of measured spots inside mean ± 1.645 sd "
        "(rows with a spread). Reference rows call `sr.tl.train(refs, image_key=keys, reference=True, "
        "target=target, scale=2, genes=genes, seed=0, method=m)` and `sr.tl.superresolve(target, image_key=key, "
        'scale=2, model=model, genes=genes, seed=0, key_added="sr")`; where that API is missing they say so.\n\n'
        f"Command: `{meta['command']}`  \n"
        f"Data: her2st sections {meta['sections']} (`{meta['root']}/her2st`; Andersson et al. 2021)  \n"
        f"Seed: {meta['seed']} (models; the binomial split uses seeds {meta['seed']}..{meta['seed'] + NOISE_SEEDS - 1})"
        f"  \nMachine: {meta['machine']}  \nDate: {meta['date']}\n\n"
        f"{chr(10).join(lines)}\n\n"
        "## Noise ceiling\n\n"
        "Each spot's counts split in two by binomial thinning (p = 0.5); each half normalised as `sr.pp.normalize` "
        "does; per gene, the correlation of the two halves' deviations from their block mean (blocks of 2-4 "
        "spots), averaged over the same genes. Spearman-Brown steps it up to full depth: the share of the "
        "within-block variance that is signal, not counting noise. Its square root bounds the `pearson_within` any "
        "prediction can reach against the measured spots.\n\n"
        f"{chr(10).join(noise_lines)}\n\n"
        f"Per-gene scores: `{meta['csv']}`.\n"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=None, help="folder holding her2st/ (default $SR_SPATIAL_DATA)")
    parser.add_argument("--sections", nargs="+", default=list(SECTIONS), help="target sections")
    parser.add_argument("--references", nargs="+", default=list(SECTIONS), help="sections the references come from")
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument("--n-genes", type=int, default=50)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "her2st_reference.md")
    args = parser.parse_args()

    import warnings

    warnings.filterwarnings("ignore")
    import pandas as pd
    import torch
    from srbench.her2st import data_root, load_section, pool_2x2

    root = data_root(args.data)
    if not (root / "her2st").is_dir():
        print(f"No her2st data under {root}; pass --data or set $SR_SPATIAL_DATA.", file=sys.stderr)
        sys.exit(2)
    names = list(dict.fromkeys([*args.sections, *args.references]))
    loaded = {}
    for s in names:
        section = load_section(s, root=root)
        loaded[s] = (section, pool_2x2(section))
    rows, noise, status = [], {}, {}
    for name in args.sections:
        pool = {s: loaded[s] for s in args.references if s != name} | {name: loaded[name]}
        r, noise[name], status[name] = run_section(name, pool, args.methods, n_genes=args.n_genes, seed=args.seed)
        rows += r
        print(f"{name}: done", file=sys.stderr)
    per_gene = pd.DataFrame(rows)
    load = os.getloadavg()
    csv = args.out.with_suffix(".csv")
    meta = {
        "command": ("python benchmarks/her2st_reference.py " + " ".join(sys.argv[1:])).strip(),
        "sections": args.sections,
        "methods": args.methods,
        "seed": args.seed,
        "n_genes": args.n_genes,
        "root": str(root),
        "csv": csv.name,
        "machine": (
            f"{platform.machine()}, {os.cpu_count()} CPU cores shared with other jobs (load average at the end "
            f"{load[0]:.1f}/{load[1]:.1f}/{load[2]:.1f}), no GPU, torch {torch.__version__}, "
            f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}; Python {platform.python_version()}"
        ),
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
    }
    text = _render(per_gene, noise, status, meta)
    notes = args.out.with_name(args.out.stem + "_notes.md")
    if notes.exists():
        text += "\n" + notes.read_text()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    if len(per_gene):
        per_gene.to_csv(csv, index=False, float_format="%.5g")
    args.out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
