"""Learning from a whole Visium HD slide: cost against the number of reference bins, and on a dask cluster (issue 35).

Usage::

    python benchmarks/hd_scale.py [--sizes 14x12 40x32 78x64 114x94] [--workers 1 2 4] [--cluster-size 40x32]
                                  [--out benchmarks/results/hd_scale.md] [--quick]

Each size ``RxC`` is a pair of synthetic slides (:func:`sr_spatial.datasets.demo`, R x C Visium spots, 50 genes):
the reference is one slide's hidden truth measured by 8 µm square bins (:func:`sr_spatial.datasets.measure_demo_truth`,
0.5 UMI per µm², as Visium HD's ``square_008um`` level), the target a second slide (seed 4) measured by its Visium
spots. 78 x 64 spots is a Visium capture area's tissue (about 300,000 bins); 114 x 94 a whole 8 µm capture area
(about 660,000). Each size runs in a fresh child process: ``sr.tl.train(ref, "he", reference=True, aggregate=3,
target=target, scale=4, method="histology")`` (the 8 µm bins pooled 3 x 3 into 24 µm units for the 25 µm output),
then ``sr.tl.superresolve(target, ..., model=model)``. The page gives the wall time of each step, the peak memory
of training and applying (the child's peak RSS from just before training, Linux's ``VmHWM`` reset through
``/proc/self/clear_refs``) and of the whole child (max RSS, generating the synthetic slides included), the Pearson
r against the target's hidden truth (mean over genes) beside the measurement's (nearest spot), and the slope of log
time against log bins.

The cluster rows apply one model (trained as above, on the ``--cluster-size`` pair) to the target on a
``distributed.LocalCluster`` of 1, 2 and 4 single-threaded worker processes, against the same call without a
cluster: wall time, whether the map is identical to the local one, and whether dask warned of a large graph.

Targets (issue 35, 2 CPU cores, run alone): the 78 x 64 pair in under 5 minutes and 6 GB; 114 x 94 (a whole 8 µm
capture area) in under 10 minutes and 8 GB.
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
N_GENES = 50
BIN_UM = 8.0
AGGREGATE = 3
SCALE = 4
TARGET_IMAGE = "demo_full_image"


def slides(shape: tuple[int, int]):
    """The reference (8 µm bins over one slide's truth) and the target (a second slide, with its truth)."""
    from srbench.reference import reference_slide

    import sr_spatial as sr

    source = sr.datasets.demo(seed=1, n_rows=shape[0], n_cols=shape[1], n_genes=N_GENES)
    reference = reference_slide(source, bin_um=BIN_UM, split_px=None, umis_per_um2=0.5, seed=0)
    del source
    target = sr.datasets.demo(seed=4, n_rows=shape[0], n_cols=shape[1], n_genes=N_GENES)
    return reference, target


def train(reference, target, seed: int):
    import sr_spatial as sr

    return sr.tl.train(
        reference, "he", reference=True, aggregate=AGGREGATE, target=target, scale=SCALE, method="histology",
        genes=list(target.tables["table"].var_names[:N_GENES]), seed=seed, show_progress_bar=False,
    )  # fmt: skip


def peak_rss_mib(*, reset: bool = False) -> float | None:
    """This process's peak RSS so far (Linux ``VmHWM``), reset to the current RSS if ``reset``; ``None`` elsewhere."""
    try:
        status = Path("/proc/self/status").read_text()
        peak = next(int(line.split()[1]) / 1024 for line in status.splitlines() if line.startswith("VmHWM:"))
        if reset:
            Path("/proc/self/clear_refs").write_text("5")  # "5": reset the peak RSS to the current RSS
    except (OSError, StopIteration):
        return None
    return peak


def child_size(shape: tuple[int, int], seed: int) -> dict:
    import gc
    import resource

    import sr_spatial as sr

    reference, target = slides(shape)
    n_bins = len(next(iter(reference.tables.values())))
    # The synthetic slides' generation peaks higher than the work on large sizes: the work's own peak starts here.
    gc.collect()
    slides_peak_mib = peak_rss_mib(reset=True)
    start = time.perf_counter()
    model = train(reference, target, seed)
    trained = time.perf_counter() - start
    sr.tl.superresolve(
        target, TARGET_IMAGE, scale=SCALE, model=model, seed=seed, key_added="sr", show_progress_bar=False
    )
    applied = time.perf_counter() - start - trained
    work_peak_mib = peak_rss_mib()
    # The reset lowers the max RSS too: the whole child's peak is the larger of the slides' and the work's.
    peak_mib = max(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, slides_peak_mib or 0.0)
    sr.tl.superresolve(
        target, TARGET_IMAGE, scale=SCALE, method="nearest", genes=model.genes, key_added="nearest",
        show_progress_bar=False,
    )  # fmt: skip
    score = {k: float(sr.tl.evaluate(target, k, truth_key="demo_truth")["pearson"].mean()) for k in ("sr", "nearest")}
    return {
        "shape": f"{shape[0]}x{shape[1]}",
        "n_bins": n_bins,
        "n_spots": int(len(target.tables["table"])),
        "train_s": trained,
        "apply_s": applied,
        "total_s": trained + applied,
        "peak_mib": peak_mib,
        "work_peak_mib": work_peak_mib,
        "pearson": score["sr"],
        "nearest_pearson": score["nearest"],
    }


def child_cluster(shape: tuple[int, int], workers: list[int], seed: int) -> list[dict]:
    import logging
    import warnings

    import distributed
    import numpy as np

    import sr_spatial as sr

    reference, target = slides(shape)
    model = train(reference, target, seed)
    del reference
    call = {
        "scale": SCALE,
        "model": model,
        "seed": seed,
        "key_added": "sr",
        "inplace": False,
        "show_progress_bar": False,
    }
    start = time.perf_counter()
    local = sr.tl.superresolve(target, TARGET_IMAGE, **call)
    rows = [{"workers": 0, "apply_s": time.perf_counter() - start, "identical": True, "large_graph": False}]
    expected = np.asarray(local.tables["sr_table"].X)
    logging.getLogger("distributed").setLevel(logging.ERROR)
    for n in workers:
        with (
            warnings.catch_warnings(record=True) as caught,
            distributed.LocalCluster(
                n_workers=n, threads_per_worker=1, processes=True, dashboard_address=None
            ) as cluster,
            distributed.Client(cluster) as client,
        ):
            warnings.simplefilter("always")
            start = time.perf_counter()
            out = sr.tl.superresolve(target, TARGET_IMAGE, client=client, **call)
            seconds = time.perf_counter() - start
        rows.append(
            {
                "workers": n,
                "apply_s": seconds,
                "identical": bool(np.array_equal(np.asarray(out.tables["sr_table"].X), expected)),
                "large_graph": any("large graph" in str(w.message) for w in caught),
            }
        )
    return rows


def parse_shape(text: str) -> tuple[int, int]:
    rows, cols = text.lower().split("x")
    return int(rows), int(cols)


def run_child(args: list[str]) -> object:
    command = [sys.executable, __file__, *args]
    out = subprocess.run(command, check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def slope(rows: list[dict]) -> str:
    import numpy as np

    if len(rows) < 2:
        return "n/a (one size)"
    bins = np.log([r["n_bins"] for r in rows])
    total = np.log([r["total_s"] for r in rows])
    exponent = np.polyfit(bins, total, 1)[0]
    per_100k = np.polyfit([r["n_bins"] / 1e5 for r in rows], [r["total_s"] for r in rows], 1)[0]
    return f"time ~ bins^{exponent:.2f}; {per_100k:.0f} s more per 100,000 bins (least squares over the sizes)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", nargs="+", default=["14x12", "40x32", "78x64", "114x94"])
    parser.add_argument("--workers", nargs="*", type=int, default=[1, 2, 4])
    parser.add_argument("--cluster-size", default="40x32")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=str(HERE / "results" / "hd_scale.md"))
    parser.add_argument("--quick", action="store_true", help="a small check that the script works (14x12, 10x8)")
    parser.add_argument("--render-only", action="store_true", help="rewrite the page from the saved JSON")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child == "size":
        print(json.dumps(child_size(parse_shape(args.sizes[0]), args.seed)))
        return
    if args.child == "cluster":
        print(json.dumps(child_cluster(parse_shape(args.cluster_size), args.workers, args.seed)))
        return
    if args.quick:
        args.sizes, args.cluster_size, args.workers = ["10x8", "14x12"], "10x8", [1, 2]
    saved = Path(args.out).with_suffix(".json")
    if args.render_only:
        run = json.loads(saved.read_text())
    else:
        run = {"load_before": os.getloadavg(), "command": command_line(args), "cluster_size": args.cluster_size}
        run |= {"rows": [], "cluster": []}
        for size in args.sizes:
            run["rows"].append(run_child(["--child", "size", "--sizes", size, "--seed", str(args.seed)]))
            saved.write_text(json.dumps(run, indent=1))  # each size kept as it comes: a later one may not finish
            print(run["rows"][-1], file=sys.stderr)
        if args.workers:
            command = ["--child", "cluster", "--cluster-size", args.cluster_size, "--seed", str(args.seed), "--workers"]
            run["cluster"] = run_child(command + [str(w) for w in args.workers])
            print(run["cluster"], file=sys.stderr)
        run["load_after"] = os.getloadavg()
        run["date"] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
        saved.write_text(json.dumps(run, indent=1))
    render(args, run)


def command_line(args) -> str:
    """The command that measures these rows (kept in the saved JSON, so a re-rendered page names the run's own)."""
    return (
        f"python benchmarks/hd_scale.py --sizes {' '.join(args.sizes)} --workers {' '.join(map(str, args.workers))} "
        f"--cluster-size {args.cluster_size}"
    )


def render(args, run: dict) -> None:
    """The results page from the saved rows, with the hand-written ``<page>_notes.md`` beside it appended."""
    rows, cluster, load_before, load = run["rows"], run["cluster"], run["load_before"], run["load_after"]
    doc = " ".join(__doc__[__doc__.index("Each size") : __doc__.index("\n\nTargets")].split())
    lines = [
        "# Learning from a whole Visium HD slide: cost against size (issue 35)",
        "",
        doc,
        "",
        f"Command: `{run.get('command', command_line(args))}`  ",
        f"Machine: {platform.machine()}, {os.cpu_count()} CPU cores, no GPU; load average (1/5/15 min) before "
        f"{load_before[0]:.1f}/{load_before[1]:.1f}/{load_before[2]:.1f}, after {load[0]:.1f}/{load[1]:.1f}/"
        f"{load[2]:.1f}; Python {platform.python_version()}  ",
        f"Date: {run.get('date') or time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}",
        "",
        "| spots (R x C) | reference 8 µm bins | target spots | train s | apply s | total s | peak MiB (train + apply) "
        "| peak MiB (whole child) | r (truth) | nearest r |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        work = "n/a" if r.get("work_peak_mib") is None else f"{r['work_peak_mib']:.0f}"
        lines.append(
            f"| {r['shape']} | {r['n_bins']:,} | {r['n_spots']:,} | {r['train_s']:.0f} | {r['apply_s']:.0f} | "
            f"{r['total_s']:.0f} | {work} | {r['peak_mib']:.0f} | {r['pearson']:.3f} | {r['nearest_pearson']:.3f} |"
        )
    lines += ["", f"Slope: {slope(rows)}."]
    if cluster:
        lines += [
            "",
            f"## Applying on a `distributed.LocalCluster` ({run.get('cluster_size', args.cluster_size)} pair)",
            "",
            "| workers | apply s | map identical to the local run | large-graph warning |",
            "|---|---:|---|---|",
        ]
        for c in cluster:
            name = "none (local)" if c["workers"] == 0 else str(c["workers"])
            lines.append(
                f"| {name} | {c['apply_s']:.0f} | {'yes' if c['identical'] else 'NO'} | "
                f"{'yes' if c['large_graph'] else 'no'} |"
            )
    out = Path(args.out)
    text = "\n".join(lines) + "\n"
    notes = out.with_name(out.stem + "_notes.md")
    if notes.exists():
        text += "\n" + notes.read_text()
    out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
