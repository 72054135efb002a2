"""Coverage of the 90 % interval in the judged her2st protocol (issue 32, item 5).

The judge (``../shared/bench/her2st_judge.py``) scores the mean only. This script sets up the same targets, genes
and references with the judge's own functions, trains and applies exactly as it does
(``sr.tl.train(refs, reference=True, target=..., scale=2)`` then ``sr.tl.superresolve(..., model=model)``), and
reads both the mean (``key_added``) and the sd (``key_added + "_std"``) at the measured spots. Coverage is the
fraction of (spot, gene) pairs whose measured value lies within mean +- 1.645 sd, both in the package's units,
log1p(counts per 10,000) (the truth converted to them), over the judge's genes.

Usage (from the project root, with ``../shared`` beside it)::

    python benchmarks/her2st_coverage.py [--targets B4,C2,C3] [--method histology]
"""

from __future__ import annotations

import argparse
import datetime
import os
import pathlib
import sys
import time

import numpy as np
import pandas as pd
from srbench.report import machine

ROOT = pathlib.Path(__file__).resolve().parents[1]
BENCH = ROOT.parent / "shared" / "bench"
PAGE = ROOT / "benchmarks" / "results" / "her2st_coverage.md"
Z90 = 1.645


def at_spots(sdata, key: str, name: str, xy: np.ndarray, genes: list[str]) -> np.ndarray:
    """An image's values ``(n_genes, n_spots)`` at the bins holding ``xy``, as the judge reads them."""
    from spatialdata.transformations import get_transformation

    element = sdata.images[key]
    image = element if not hasattr(element, "keys") else element["scale0"].image
    values = np.asarray(image.values, float)
    matrix = get_transformation(sdata.images[key], to_coordinate_system=name).to_affine_matrix(("x", "y"), ("x", "y"))
    q = np.linalg.inv(matrix) @ np.vstack([xy[:, 0], xy[:, 1], np.ones(len(xy))])
    ix = np.clip(np.floor(q[0]).astype(int), 0, values.shape[2] - 1)
    iy = np.clip(np.floor(q[1]).astype(int), 0, values.shape[1] - 1)
    channels = [str(c) for c in image.coords["c"].values]
    return np.array([values[channels.index(g), iy, ix] for g in genes])


def one_target(judge, sections: dict, target: str, method: str) -> dict:
    """Coverage and interval width on one target, references = the other sections."""
    import sr_spatial as sr

    T = sections[target]
    cnt, sxy, step, blk = T["cnt"], T["sxy"], T["step"], T["blk"]
    norm = judge.lognorm(cnt.values.astype(float))
    genes = list(cnt.columns[np.argsort(-(cnt.values > 0).mean(0) * norm.var(0))[:50]])
    pooled = cnt.groupby(blk).sum()
    pxy = pd.DataFrame(sxy).groupby(blk).mean().loc[pooled.index].values
    refs = [s for s in judge.SECTIONS if s != target]
    ref_sd = [
        judge.sdata_of(f"ref_{r}", sections[r]["img"], sections[r]["sxy"], sections[r]["cnt"].values,
                       list(sections[r]["cnt"].columns), 0.25 * sections[r]["step"])
        for r in refs
    ]  # fmt: skip
    name = f"her2st_{target}"
    sdata = judge.sdata_of(name, T["img"], pxy, pooled.values, pooled.columns.astype(str), 1.25 * step)
    start = time.perf_counter()
    model = sr.tl.train(ref_sd, image_key=[f"ref_{r}_image" for r in refs], reference=True, target=sdata, scale=2,
                        genes=genes, seed=0, method=method)  # fmt: skip
    sr.tl.superresolve(sdata, image_key=f"{name}_image", scale=2, model=model, genes=genes, seed=0, key_added="sr")
    seconds = time.perf_counter() - start
    mean = at_spots(sdata, "sr", name, sxy, genes)
    sd = at_spots(sdata, "sr_std", name, sxy, genes)
    counts = cnt[genes].values.astype(float).T
    truth = np.log1p(counts / cnt.values.sum(1)[None, :] * 1e4)  # the package's units
    inside = np.abs(truth - mean) <= Z90 * sd
    per_gene = inside.mean(axis=1)
    return {"target": target, "refs": "+".join(refs), "coverage": float(inside.mean()),
            "gene_q10": float(np.quantile(per_gene, 0.1)), "gene_q90": float(np.quantile(per_gene, 0.9)),
            "median_sd": float(np.median(sd)), "seconds": seconds}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--targets", default="B4,C2,C3")
    parser.add_argument("--method", default="histology")
    args = parser.parse_args()
    if not (BENCH / "her2st_judge.py").exists():
        sys.exit(f"The judged protocol is not at {BENCH}: put the project's shared/ folder beside the repository.")
    sys.path.insert(0, str(BENCH))
    import her2st_judge as judge

    sections, rows = {}, []
    for target in args.targets.split(","):
        for s in judge.SECTIONS:
            if s not in sections:
                sections[s] = judge.section(s)
        rows.append(one_target(judge, sections, target, args.method))
        print(rows[-1], flush=True)
    lines = [
        "# her2st, coverage of the 90 % interval in the judged protocol (issue 32)\n",
        __doc__.split("\n\n")[1].replace("\n", " ") + "\n",
        "Command: `python benchmarks/her2st_coverage.py"
        + ("" if args.targets == "B4,C2,C3" else f" --targets {args.targets}")
        + ("" if args.method == "histology" else f" --method {args.method}")
        + "`  ",
        f"Machine: {machine()}  ",
        f"Date: {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC; load average at the end "
        f"{'/'.join(f'{x:.1f}' for x in os.getloadavg())}\n",
        f'## `method="{args.method}"` trained on the other sections\n',
        "| target | references | coverage of the 90 % interval | per gene, 10th-90th percentile | median sd | s |",
        "|---|---|---:|---|---:|---:|",
    ]
    lines += [
        f"| {r['target']} | {r['refs']} | {r['coverage']:.3f} | {r['gene_q10']:.2f}-{r['gene_q90']:.2f} | "
        f"{r['median_sd']:.3f} | {r['seconds']:.0f} |"
        for r in rows
    ]
    notes = PAGE.with_name(PAGE.stem + "_notes.md")
    text = "\n".join(lines) + "\n"
    PAGE.write_text(text + ("\n" + notes.read_text() if notes.exists() else ""))
    print(f"Wrote {PAGE}")


if __name__ == "__main__":
    main()
