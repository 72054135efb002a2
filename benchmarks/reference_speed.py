"""Training on three Visium-size references and applying the model to a fourth slide: time and memory (issue 25).

Usage::

    python benchmarks/reference_speed.py [--methods histology diffusion] [--config base] [--seed 0]
                                         [--out benchmarks/results/reference_speed.md]

The references are three synthetic Visium-size slides (:func:`sr_spatial.datasets.demo` with 78 x 64 spots, about
3,200 under the tissue each, 50 genes, seeds 1-3; no hidden truth is needed): their 100 µm spots are the units at
the output's scale. The target is a fourth such slide (seed 4) whose spots are pooled 2 x 2 into pseudo-spots
(counts summed, circles enclosing the
pooled spots), super-resolved back at ``scale=2``. Each method runs in a fresh child process:
``sr.tl.train(refs, image_key=keys, reference=True, target=target, scale=2, genes=genes, seed=0, method=m)`` then
``sr.tl.superresolve(target, ..., model=model)``; the page gives the wall time of each step, the child's peak
memory, and the Pearson r at the target's measured spots (the pseudo-spot's own value for comparison).

Target (issue 25, 2 CPU cores): the histology method trained and applied in under 5 minutes, under 3 GB.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
SHAPE = (78, 64)
N_GENES = 50
IMAGE = "demo_full_image"


def pooled_target(sdata):
    """``sdata``'s spots pooled 2 x 2 on their lattice: counts summed, a circle enclosing each block's spots."""
    import numpy as np
    import pandas as pd
    from anndata import AnnData
    from scipy import sparse
    from spatialdata import SpatialData
    from spatialdata.models import ShapesModel, TableModel
    from spatialdata.transformations import get_transformation

    table = sdata.tables["table"]
    shapes = sdata.shapes["demo"].loc[table.obs["spot_id"].to_numpy()]
    centres = np.column_stack([shapes.geometry.x.to_numpy(), shapes.geometry.y.to_numpy()])
    rows, cols = table.obs["array_row"].to_numpy(), table.obs["array_col"].to_numpy()
    block = (rows // 2) * 10_000 + cols // 4  # Visium's columns step by 2 between neighbours of a row
    keys, group = np.unique(block, return_inverse=True)
    n = len(keys)
    counts = sparse.csr_matrix(
        (np.ones(len(group)), (group, np.arange(len(group)))), shape=(n, len(group))
    ) @ sparse.csr_matrix(table.X)
    size = np.bincount(group, minlength=n)
    pooled = np.column_stack([np.bincount(group, weights=centres[:, k], minlength=n) / size for k in (0, 1)])
    reach = np.zeros(n)
    np.maximum.at(reach, group, np.hypot(*(centres - pooled[group]).T))
    radius = reach + float(shapes["radius"].iloc[0])
    ids = pd.Index([f"p{i}" for i in range(n)])
    circles = ShapesModel.parse(
        pooled,
        geometry=0,
        radius=radius,
        index=ids,
        transformations=get_transformation(sdata.shapes["demo"], get_all=True),
    )
    obs = pd.DataFrame({"region": pd.Categorical(["pseudo"] * n), "spot_id": ids}, index=ids)
    adata = AnnData(X=sparse.csr_matrix(counts, dtype=np.float32), obs=obs, var=table.var[[]].copy())
    pseudo = TableModel.parse(adata, region="pseudo", region_key="region", instance_key="spot_id")
    target = SpatialData(images={IMAGE: sdata.images[IMAGE]}, shapes={"pseudo": circles}, tables={"table": pseudo})
    return target, centres, group


def child(method: str, config: str, seed: int, shape: tuple[int, int] = SHAPE) -> dict:
    import resource

    import numpy as np

    import sr_spatial as sr

    slides = [
        sr.datasets.demo(seed=s, n_rows=shape[0], n_cols=shape[1], n_genes=N_GENES, include_truth=False)
        for s in (1, 2, 3, 4)
    ]
    refs = slides[:3]
    target, centres, group = pooled_target(slides[3])
    genes = list(slides[3].tables["table"].var_names[:N_GENES])
    start = time.perf_counter()
    model = sr.tl.train(
        refs, image_key=[IMAGE] * 3, reference=True, target=target, scale=2, genes=genes, seed=seed, method=method,
        config=config, show_progress_bar=False,
    )  # fmt: skip
    trained = time.perf_counter() - start
    sr.tl.superresolve(
        target, IMAGE, scale=2, model=model, genes=genes, seed=seed, key_added="sr", show_progress_bar=False
    )
    applied = time.perf_counter() - start - trained
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    # Score at the measured spots (the bin under each spot's centre) against their own log-normalised counts.
    from scipy.spatial import cKDTree

    def lognorm(counts, names):
        counts = np.asarray(counts.todense() if hasattr(counts, "todense") else counts, dtype=np.float64)
        normalised = np.log1p(counts / np.maximum(counts.sum(axis=1, keepdims=True), 1) * 1e4)
        return normalised[:, [list(names).index(g) for g in genes]]

    spots = slides[3].tables["table"]
    truth = lognorm(spots.X, spots.var_names)
    table = target.tables["sr_table"]
    pred = np.asarray(table.X)[cKDTree(table.obsm["spatial"]).query(centres)[1]]
    own = lognorm(target.tables["table"].X, target.tables["table"].var_names)[group]

    def mean_r(a):
        return float(np.nanmean([np.corrcoef(a[:, g], truth[:, g])[0, 1] for g in range(len(genes))]))

    return {
        "method": method,
        "train_s": trained,
        "apply_s": applied,
        "total_s": trained + applied,
        "peak_mib": peak_mib,
        "pearson": mean_r(pred),
        "own_pearson": mean_r(own),
        "n_units": int(sum(len(r.tables["table"]) for r in refs)),
        "n_target_spots": int(len(target.tables["table"])),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--methods", nargs="+", default=["histology", "diffusion"], choices=["histology", "diffusion"])
    parser.add_argument("--config", default="base")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=str(HERE / "results" / "reference_speed.md"))
    parser.add_argument("--quick", action="store_true", help="a 16 x 12-spot check that the script works")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.config, args.seed, (16, 12) if args.quick else SHAPE)))
        return
    rows = []
    for method in args.methods:
        command = [sys.executable, __file__, "--child", method, "--config", args.config, "--seed", str(args.seed)]
        command += ["--quick"] if args.quick else []
        out = subprocess.run(command, check=True, capture_output=True, text=True)
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
        print(rows[-1], file=sys.stderr)
    load = os.getloadavg()
    lines = [
        "# Reference training at Visium size: three references, one target (issue 25)",
        "",
        " ".join(__doc__[__doc__.index("The references") : __doc__.index("\n\nTarget")].split()),
        "",
        f"Command: `python benchmarks/reference_speed.py --methods {' '.join(args.methods)} --config {args.config}`  ",
        f"Machine: {platform.machine()}, {os.cpu_count()} CPU cores, no GPU; load average at the end "
        f"{load[0]:.1f}/{load[1]:.1f}/{load[2]:.1f}; Python {platform.python_version()}  ",
        f"Date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}",
        "",
        "| method | reference units | target spots | train s | apply s | total s | peak MiB | r at spots | own r |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['method']} | {r['n_units']} | {r['n_target_spots']} | {r['train_s']:.0f} | {r['apply_s']:.0f} | "
            f"{r['total_s']:.0f} | {r['peak_mib']:.0f} | {r['pearson']:.3f} | {r['own_pearson']:.3f} |"
        )
    Path(args.out).write_text("\n".join(lines) + "\n")
    print(Path(args.out).read_text())


if __name__ == "__main__":
    main()
