"""Peak memory of super-resolution against slide size: synthetic slides 1x, 4x and 16x the demo's area.

Usage::

    python benchmarks/memory.py [--sizes 1 4 16] [--config tiny] [--block-bins 128] [--work DIR] [--out ...]

Each slide is :func:`sr_spatial.datasets.demo` with ``sqrt(size)`` times as many spot rows and columns, written
to zarr once (``--work``, kept between runs) and read back, so its H&E is a lazy dask array as
``spatialdata.read_zarr`` gives it. A ``--config`` model is trained once on the 1x slide and saved; every size is
then super-resolved with ``model=`` in a fresh child process (training memory is not part of what tiling
bounds), once with the result kept in memory and once written to a zarr store (``out=``). Peak RSS is the child's
``ru_maxrss``; "above import" subtracts the RSS after importing the package and reading the slide's metadata.
Prints a Markdown table and writes it to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def _rss_mib() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _make_slide(size: int, path: Path, seed: int) -> None:
    import sr_spatial as sr

    side = math.sqrt(size)
    sdata = sr.datasets.demo(seed=seed, n_rows=round(22 * side), n_cols=round(20 * side), include_truth=False)
    sdata.write(path, overwrite=True)


def _train(slide: Path, model_dir: Path, config: str, seed: int) -> None:
    import spatialdata as sd

    import sr_spatial as sr

    sdata = sd.read_zarr(slide)
    model = sr.tl.train(sdata, "demo_full_image", config=config, seed=seed, show_progress_bar=False)
    model.save(model_dir, overwrite=True)


def _superresolve(slide: Path, model_dir: Path, out: str | None, block_bins: int | None, seed: int) -> dict:
    import spatialdata as sd

    import sr_spatial as sr

    sdata = sd.read_zarr(slide)
    baseline = _rss_mib()
    start = time.perf_counter()
    kwargs = {} if block_bins is None else {"block_bins": block_bins}
    if out is not None:
        kwargs["image_store"] = out
    sr.tl.superresolve(
        sdata, "demo_full_image", model=model_dir, seed=seed, overwrite=True, show_progress_bar=False, **kwargs
    )
    wall = time.perf_counter() - start
    table = sdata.tables["demo_full_image_superres_table"]
    image = sdata.images["demo_full_image_superres"]
    return {
        "spots": int(sdata.tables["table"].n_obs),
        "bins": int(table.n_obs),
        "grid": f"{image.sizes['y']} x {image.sizes['x']}",
        "image_mpx": _image_mpx(sdata),
        "peak_mib": _rss_mib(),
        "above_import_mib": _rss_mib() - baseline,
        "wall_s": wall,
    }


def _image_mpx(sdata) -> float:
    image = sdata.images["demo_full_image"]
    level0 = next(iter(image["scale0"].ds.data_vars.values()))
    return level0.sizes["y"] * level0.sizes["x"] / 1e6


def _child(args: list[str]) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    done = subprocess.run(
        [sys.executable, __file__, "--child", *args], check=True, capture_output=True, text=True, env=env
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--config", default="tiny")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--block-bins", nargs="+", default=["auto"], help="block sides to compare ('auto': the package's choice)"
    )
    parser.add_argument("--work", type=Path, default=HERE / ".cache" / "memory")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "memory.md")
    parser.add_argument("--targets", nargs="+", default=["memory", "zarr"], choices=["memory", "zarr"])
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.child:
        task, *rest = args.child
        if task == "slide":
            _make_slide(int(rest[0]), Path(rest[1]), int(rest[2]))
            print(json.dumps({}))
        elif task == "train":
            _train(Path(rest[0]), Path(rest[1]), rest[2], int(rest[3]))
            print(json.dumps({}))
        else:
            block = None if rest[3] == "default" else int(rest[3])
            out = None if rest[2] == "memory" else rest[2]
            print(json.dumps(_superresolve(Path(rest[0]), Path(rest[1]), out, block, int(rest[4]))))
        return

    sys.path.insert(0, str(HERE))
    from srbench.report import machine

    args.work.mkdir(parents=True, exist_ok=True)
    slides = {}
    for size in args.sizes:
        slides[size] = args.work / f"demo_{size}x_seed{args.seed}.zarr"
        if not slides[size].exists():
            print(f"writing the {size}x slide to {slides[size]}", file=sys.stderr)
            _child(["slide", str(size), str(slides[size]), str(args.seed)])
    model_dir = args.work / f"model_{args.config}_seed{args.seed}"
    if not model_dir.exists():
        print(f"training the {args.config!r} model on the 1x slide", file=sys.stderr)
        _child(["train", str(args.work / f"demo_1x_seed{args.seed}.zarr"), str(model_dir), args.config, str(args.seed)])

    rows = []
    for block in args.block_bins:
        for size in args.sizes:
            for target in args.targets:
                out = "memory" if target == "memory" else str(args.work / f"out_{size}x.zarr")
                print(f"super-resolving the {size}x slide, blocks {block}, result in {target}", file=sys.stderr)
                child = "default" if block == "auto" else block
                result = _child(["run", str(slides[size]), str(model_dir), out, child, str(args.seed)])
                rows.append({"blocks": block, "slide": f"{size}x", "result_in": target, **result})
    columns = "block bins | slide | result in | spots | bins | bin grid | H&E Mpx | peak RSS MiB | above import MiB"
    lines = [f"| {columns} | wall s |"]
    lines.append("|---|---|---|---:|---:|---|---:|---:|---:|---:|")
    for row in rows:
        lines.append(
            f"| {row['blocks']} | {row['slide']} | {row['result_in']} | {row['spots']} | {row['bins']} | {row['grid']} "
            f"| {row['image_mpx']:.0f} | {row['peak_mib']:.0f} | {row['above_import_mib']:.0f} | {row['wall_s']:.1f} |"
        )
    table = "\n".join(lines)
    header = [
        "# Memory against slide size",
        "",
        f"Command: `python benchmarks/memory.py --sizes {' '.join(map(str, args.sizes))} --config {args.config} "
        f"--seed {args.seed} --block-bins {' '.join(args.block_bins)}`",
        f"Machine: {machine()}; OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', '1')}; load average at the end "
        f"{os.getloadavg()[0]:.1f}.",
        "",
        "Synthetic demo slides (`sr.datasets.demo` with more spot rows and columns), read lazily from zarr, "
        f"super-resolved 4x with a saved {args.config!r} model (8 draws) in a fresh process each.",
        "",
        table,
        "",
    ]
    text = "\n".join(header)
    print(text)
    args.out.write_text(text)


if __name__ == "__main__":
    main()
