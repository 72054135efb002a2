"""A whole Visium-size slide through the public API: wall time per phase, peak memory and accuracy (issue 16).

Usage::

    python benchmarks/visium_scale.py [--size 1|4] [--config base] [--device auto] [--seed 0] [--quick]
                                      [--work DIR] [--out PATH]

The slide is :func:`sr_spatial.datasets.demo` with 78 x 64 spots (about 5,000, Visium's size) and 50 genes,
or with ``--size 4`` the 4x larger 156 x 128 slide; it is written to zarr once (``--work``, kept between runs)
so that every run reads it lazily, as ``spatialdata.read_zarr`` gives a user's slide. Each method runs in a fresh
child process: read the slide, ``sr.tl.superresolve(..., scale=4, inplace=False)``, write the result to zarr.
The wall time of each phase comes from the package's own log records (``sr_phase``/``sr_seconds``): reading
(``read_zarr`` plus the slide's spots, counts and grid), features (histology and training pairs), training,
sampling (the diffusion draws, or the baseline's maps) and writing (building the output elements plus
``SpatialData.write``). Peak RSS is the child's ``ru_maxrss`` before scoring; with CUDA, the peak GPU memory
too. Accuracy is the mean over genes of the Pearson r against the demo's hidden truth on the tissue bins
(:func:`sr_spatial.tl.evaluate`). Methods: ``"histology"`` (morphology features and the spot-supervised
predictor alone, ``learned_encoder=False``), ``"histology_learned"`` (the same with ``learned_encoder=True``, its
encoders sized by ``--config``: the default without a model on slides of at least 1,000 spots, as these are),
``"diffusion"`` (trained on the slide with ``--config``), and the baselines ``"nearest"`` and ``"bicubic"``.

``--quick`` runs a 14 x 12-spot slide with 10 genes, ``config="tiny"``, 20 training steps and 2 draws: a check
that the script works, not a measurement; its page is ``results/visium_scale_quick.md``.

Targets (issue 16, 2 CPU cores, with the richer histology features included): the 1x slide under 5 minutes end to
end and under 2 GB peak; the 4x slide under 4x the time and under 1.5x the memory of the 1x slide.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
IMAGE = "demo_full_image"
PHASES = ("reading", "features", "training", "sampling", "writing")
SLIDES = {1: (78, 64), 4: (156, 128)}
QUICK_SLIDE = (14, 12)
N_GENES = 50


def _rss_mib() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class _PhaseTimes(logging.Handler):
    """Adds up the package's phase records (``sr_phase``, ``sr_seconds``)."""

    def __init__(self):
        super().__init__(level=1)
        self.seconds = dict.fromkeys(PHASES, 0.0)

    def emit(self, record: logging.LogRecord) -> None:
        phase = getattr(record, "sr_phase", None)
        if phase is not None:
            self.seconds[phase] = self.seconds.get(phase, 0.0) + record.sr_seconds


def _make_slide(n_rows: int, n_cols: int, n_genes: int, path: Path, seed: int) -> None:
    import sr_spatial as sr

    sdata = sr.datasets.demo(seed=seed, n_rows=n_rows, n_cols=n_cols, n_genes=n_genes)
    sdata.write(path, overwrite=True)


def _run(slide: Path, method: str, settings: dict, out: Path) -> dict:
    """One method on the slide in this (child) process; returns phase times, memory and accuracy."""
    import shutil

    import numpy as np
    import spatialdata as sd
    import torch

    import sr_spatial as sr

    sr.settings.verbosity = "hint"  # the writing phase is logged as a hint
    times = _PhaseTimes()
    logging.getLogger("sr_spatial").addHandler(times)
    baseline = _rss_mib()
    start = time.perf_counter()
    sdata = sd.read_zarr(slide)
    read_s = time.perf_counter() - start
    key = f"sr_{method}"
    learned = method == "histology_learned"
    result = sr.tl.superresolve(
        sdata,
        IMAGE,
        scale=4,
        method="histology" if learned else method,
        inplace=False,
        key_added=key,
        seed=settings["seed"],
        client=None,
        show_progress_bar=False,
        **({k: v for k, v in settings.items() if k != "seed"} if method == "diffusion" or learned else {}),
        **({"learned_encoder": learned} if method == "histology" or learned else {}),
    )
    write_start = time.perf_counter()
    if out.exists():
        shutil.rmtree(out)
    result.write(out)
    write_s = time.perf_counter() - write_start
    total_s = time.perf_counter() - start
    peak = _rss_mib()
    gpu = torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_available() else None
    # Score after the peak is taken: reading the truth is not part of the run.
    result.images["demo_truth"] = sdata.images["demo_truth"]
    scores = sr.tl.evaluate(result, key, truth_key="demo_truth")
    table = result.tables[f"{key}_table"]
    phases = dict(times.seconds)
    phases["reading"] += read_s
    phases["writing"] += write_s
    return {
        "method": method,
        "spots": int(sdata.tables["table"].n_obs),
        "genes": int(table.n_vars),
        "bins": int(table.n_obs),
        **{f"{p}_s": phases[p] for p in PHASES},
        "total_s": total_s,
        "peak_rss_mib": peak,
        "above_import_mib": peak - baseline,
        "gpu_peak_mib": gpu,
        "pearson": float(np.nanmean(scores["pearson"])),
    }


def _child(args: list[str]) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    done = subprocess.run([sys.executable, __file__, "--child", *args], capture_output=True, text=True, env=env)
    if done.returncode != 0:
        sys.stderr.write(done.stderr[-5000:])
        done.check_returncode()
    return json.loads(done.stdout.strip().splitlines()[-1])


def _page(rows: list[dict], args, command: str, slide: tuple[int, int], n_genes: int, settings: dict) -> str:
    from srbench.report import machine

    gpu = any(r["gpu_peak_mib"] is not None for r in rows)
    head = ["method", *(f"{p} s" for p in PHASES), "total s", "peak RSS MiB", "above import MiB"]
    head += ["GPU peak MiB"] * gpu + ["Pearson r"]
    lines = ["| " + " | ".join(head) + " |", "|---|" + "---:|" * (len(head) - 1)]
    for r in rows:
        cells = [r["method"], *(f"{r[f'{p}_s']:.1f}" for p in PHASES), f"{r['total_s']:.1f}"]
        cells += [f"{r['peak_rss_mib']:.0f}", f"{r['above_import_mib']:.0f}"]
        cells += [f"{r['gpu_peak_mib']:.0f}" if r["gpu_peak_mib"] is not None else ""] * gpu
        cells += [f"{r['pearson']:.3f}"]
        lines.append("| " + " | ".join(cells) + " |")
    first = rows[0]
    title = "Visium-size slide: time per phase, memory, accuracy"
    if args.quick:
        title += " (quick check, not a measurement)"
    text = [
        f"# {title}",
        "",
        f"Command: `{command}`",
        f"Machine: {machine()}; OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', '1')}; load average at the end "
        f"{os.getloadavg()[0]:.1f}.",
        "",
        f"Slide: `sr_spatial.datasets.demo(n_rows={slide[0]}, n_cols={slide[1]}, n_genes={n_genes}, "
        f"seed={args.seed})`, read lazily from zarr: {first['spots']} spots, {first['genes']} genes, "
        f"{first['bins']} output bins at scale 4. Diffusion settings: "
        + ", ".join(f"`{k}={v!r}`" for k, v in settings.items())
        + ". Each method in a fresh process; phases from the package's log records (reading includes "
        "`read_zarr`, writing includes `SpatialData.write` of the result); Pearson r is the mean over genes "
        "against the demo's truth on the tissue bins.",
        "",
        *lines,
        "",
        "Targets (issue 16, 2 CPU cores): the 1x slide under 300 s end to end and under 2048 MiB peak; the 4x slide "
        "(`--size 4`) under 4x the time and 1.5x the memory of the 1x slide.",
        "",
    ]
    return "\n".join(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, choices=sorted(SLIDES), default=1, help="1: 78 x 64 spots, 4: 156 x 128")
    parser.add_argument("--config", default="base")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--methods", nargs="+", default=["histology", "diffusion", "nearest", "bicubic"])
    parser.add_argument("--quick", action="store_true", help="a tiny slide and model: checks the script runs")
    parser.add_argument("--work", type=Path, default=HERE / ".cache" / "visium_scale")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.child:
        task, *rest = args.child
        if task == "slide":
            _make_slide(int(rest[0]), int(rest[1]), int(rest[2]), Path(rest[3]), int(rest[4]))
            print(json.dumps({}))
        else:
            print(json.dumps(_run(Path(rest[0]), rest[1], json.loads(rest[2]), Path(rest[3]))))
        return

    sys.path.insert(0, str(HERE))
    slide_shape = QUICK_SLIDE if args.quick else SLIDES[args.size]
    n_genes = 10 if args.quick else N_GENES
    settings = {"config": args.config, "device": args.device, "seed": args.seed}
    if args.quick:
        settings.update(config="tiny", train_steps=20, n_samples=2)
    name = "quick" if args.quick else f"{args.size}x"
    out = args.out or HERE / "results" / ("visium_scale_quick.md" if args.quick else "visium_scale.md")

    args.work.mkdir(parents=True, exist_ok=True)
    slide = args.work / f"demo_{slide_shape[0]}x{slide_shape[1]}_{n_genes}genes_seed{args.seed}.zarr"
    if not slide.exists():
        print(f"writing the {name} slide to {slide}", file=sys.stderr)
        _child(["slide", str(slide_shape[0]), str(slide_shape[1]), str(n_genes), str(slide), str(args.seed)])
    rows = []
    for method in args.methods:
        print(f"{method} on the {name} slide", file=sys.stderr)
        rows.append(_child(["run", str(slide), method, json.dumps(settings), str(args.work / f"out_{method}.zarr")]))
        print(json.dumps(rows[-1]), file=sys.stderr)
    command = "python benchmarks/visium_scale.py " + " ".join(sys.argv[1:])
    text = _page(rows, args, command.strip(), slide_shape, n_genes, settings)
    print(text)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    out.with_suffix(".json").write_text(json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    main()
