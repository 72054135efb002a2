"""Where a short `superresolve` run spends its time: cProfile of the demo slide with ``config="tiny"``.

Usage::

    OMP_NUM_THREADS=1 python benchmarks/profile_tiny.py [--config tiny] [--top 25] [--out results/profile_tiny.md]

Profiles ``sr.tl.superresolve(sr.datasets.demo(seed=0), "demo_full_image", method="diffusion", config=...)`` (slide
generation is outside the profile) and writes the functions with the largest cumulative time: all of them, then
the package's own.
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def _rows(stats: pstats.Stats, *, top: int, only_package: bool) -> list[tuple[float, float, int, str]]:
    rows = []
    for (filename, line, name), (_, calls, own, cumulative, _) in stats.stats.items():
        if only_package and "sr_spatial" not in filename:
            continue
        short = filename.split("site-packages/")[-1].split("src/")[-1]
        rows.append((cumulative, own, calls, f"{short}:{line}({name})"))
    return sorted(rows, reverse=True)[:top]


#: The package's phases, by the function that holds each (cumulative time, so nested ones overlap their callers).
PHASES = {
    "reading the slide (`spot_map`)": "spot_map",
    "histology encoder pre-training (`pretrain_encoder`)": "pretrain_encoder",
    "denoiser training (`train_network`)": "train_network",
    "posterior calibration, 8 draws (`calibrate_posterior`)": "calibrate_posterior",
    "sampling the output (`run_block`)": "run_block",
    "writing the elements (`write_superres`)": "write_superres",
}


def _phases(stats: pstats.Stats, total: float) -> list[str]:
    cumulative = {}
    for (filename, _, name), (*_, cum, _) in stats.stats.items():
        if "sr_spatial" in filename:
            cumulative[name] = max(cumulative.get(name, 0.0), cum)
    lines = ["| phase | cumulative s | share |", "|---|---:|---:|"]
    for label, name in PHASES.items():
        seconds = cumulative.get(name, 0.0)
        lines.append(f"| {label} | {seconds:.1f} | {100 * seconds / total:.0f} % |")
    return lines


def _table(rows) -> list[str]:
    lines = ["| cumulative s | own s | calls | function |", "|---:|---:|---:|---|"]
    lines += [f"| {c:.2f} | {o:.2f} | {n} | `{f}` |" for c, o, n, f in rows]
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="tiny")
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--out", type=Path, default=HERE / "results" / "profile_tiny.md")
    args = parser.parse_args()

    import sr_spatial as sr

    sys.path.insert(0, str(HERE))
    from srbench.report import machine

    sdata = sr.datasets.demo(seed=0)
    profiler = cProfile.Profile()
    start = time.perf_counter()
    profiler.enable()
    sr.tl.superresolve(
        sdata, "demo_full_image", method="diffusion", config=args.config, client=None, show_progress_bar=False
    )
    profiler.disable()
    wall = time.perf_counter() - start
    stats = pstats.Stats(profiler)
    text = [
        # No code spans or quotes in the title: the docs test finds each page on the benchmarks page by its plain
        # title, and Sphinx renders both differently.
        f"# Profile of superresolve on the demo (config {args.config})",
        "",
        f"Command: `OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', '')} python benchmarks/profile_tiny.py "
        f"--config {args.config} --top {args.top}`",
        f"Machine: {machine()}; load average at the end {os.getloadavg()[0]:.1f}. Wall time under the profiler "
        f"{wall:.1f} s (the profiler adds overhead to Python-level calls).",
        "",
        "## Phases",
        "",
        *_phases(stats, wall),
        "",
        "## Largest cumulative time, all functions",
        "",
        *_table(_rows(stats, top=args.top, only_package=False)),
        "",
        "## Largest cumulative time, sr_spatial's functions",
        "",
        *_table(_rows(stats, top=args.top, only_package=True)),
        "",
    ]
    args.out.write_text("\n".join(text))
    print("\n".join(text))


if __name__ == "__main__":
    main()
