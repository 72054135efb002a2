"""The judged her2st protocol, run as it is: ``../shared/bench/her2st_judge.py``, the package and its peer row.

The judge is the protocol the project is scored by (pseudo-spots of 2 x 2 spots, references = the other sections,
scores in the truth's units, top 50 genes by detection x variance, and a one-second ridge peer). This script runs
that very file, unchanged, for the baselines and the peer (``--peer``), ``method="histology"`` and
``method="diffusion"``, and writes what it printed into ``benchmarks/results/her2st_judged.md``: the numbers are
the judge's own to the last digit. ``her2st_reference.py`` keeps the project's earlier protocol (other genes and
units) as a second table.

Usage (from the project root, with ``../shared`` beside it)::

    python benchmarks/her2st_judged.py                      # peer, histology, diffusion
    python benchmarks/her2st_judged.py --runs peer,histology
"""

from __future__ import annotations

import argparse
import datetime
import os
import pathlib
import subprocess
import sys
import time

from srbench.report import machine

ROOT = pathlib.Path(__file__).resolve().parents[1]
JUDGE = ROOT.parent / "shared" / "bench" / "her2st_judge.py"
PAGE = ROOT / "benchmarks" / "results" / "her2st_judged.md"
RUNS = {"peer": ["--peer"], "histology": ["--method", "histology"], "diffusion": ["--method", "diffusion"]}


def run(name: str) -> tuple[list[str], float]:
    """The judge's result lines for one run, and its wall time."""
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, str(JUDGE), *RUNS[name]], cwd=ROOT, capture_output=True, text=True, check=True
    )
    lines = [
        line
        for line in done.stdout.splitlines()
        if line.split(":")[0]
        in ("B4", "C2", "C3", "mean", "ratio sr_spatial / best baseline", "ratio ridge_peer / best baseline")
    ]
    return lines, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", default="peer,histology,diffusion")
    args = parser.parse_args()
    if not JUDGE.exists():
        sys.exit(f"The judged protocol is not at {JUDGE}: put the project's shared/ folder beside the repository.")
    sections = []
    for name in args.runs.split(","):
        lines, seconds = run(name)
        print(f"{name}: {seconds:.0f} s", *lines, sep="\n", flush=True)
        sections.append(f"## `{' '.join(['python ../shared/bench/her2st_judge.py', *RUNS[name]])}` ({seconds:.0f} s)\n")
        sections.append("```\n" + "\n".join(lines) + "\n```\n")
    header = [
        "# her2st, the judged protocol (issue 32)\n",
        "The judge's own output, unchanged (`../shared/bench/her2st_judge.py`): each section's spots pooled 2 x 2 "
        "into pseudo-spots, references = the other two sections as measured, output read at the measured spots, "
        "mean Pearson r over the target's top 50 genes by (fraction detected) x (variance), everything in the "
        "truth's units. `own_block`: each spot takes its pseudo-spot's value; `ridge_peer`: own block plus a ridge "
        "on hand-crafted H&E features; `sr_spatial`: `sr.tl.train(refs, reference=True, target=...)` then "
        "`sr.tl.superresolve(..., model=model)`.\n",
        "Command: `python benchmarks/her2st_judged.py"
        + ("" if args.runs == parser.get_default("runs") else f" --runs {args.runs}")
        + "`  ",
        f"Machine: {machine()}  ",
        f"Date: {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC; load average at the end "
        f"{'/'.join(f'{x:.1f}' for x in os.getloadavg())}\n",
    ]
    notes = PAGE.with_name(PAGE.stem + "_notes.md")
    text = "\n".join(header) + "\n" + "\n".join(sections)
    PAGE.write_text(text + ("\n" + notes.read_text() if notes.exists() else ""))
    print(f"Wrote {PAGE}")


if __name__ == "__main__":
    main()
