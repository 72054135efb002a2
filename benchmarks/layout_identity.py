"""Every method's output on the demo, saved to one ``.npz``, to prove a refactor leaves outputs bit-identical.

Usage::

    python benchmarks/layout_identity.py OUT.npz            # write the outputs
    python benchmarks/layout_identity.py OUT.npz --compare BEFORE.npz   # and compare with an earlier run

Runs nearest, bicubic, histology (single slide, learned encoders, trained on a reference slide) and diffusion
(tiny: single slide, around the histology predictor, trained on a reference slide for the slide and alone), each
trained model saved and loaded back, and both trained on the reference within ``superresolve(..., reference=...)``.
Small enough for a few minutes on two busy cores. Write the file outside the repository.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import warnings
from pathlib import Path

import numpy as np

IMAGE = "demo_full_image"
SEED = 0
SCALE = 2
TINY = {"encoder_steps": 30, "train_steps": 30, "n_pool_offsets": 2}


def _arrays(sdata, key: str) -> dict[str, np.ndarray]:
    table = sdata.tables[f"{key}_table"]
    out = {f"{key}/X": np.asarray(table.X.toarray() if hasattr(table.X, "toarray") else table.X)}
    for layer, values in table.layers.items():
        out[f"{key}/{layer}"] = np.asarray(values.toarray() if hasattr(values, "toarray") else values)
    return out


def run() -> dict[str, np.ndarray]:
    """The outputs of every method on the demo, by name."""
    import sr_spatial as sr
    from sr_spatial.model import HISTOLOGY_PRESETS, PRESETS

    target = sr.datasets.demo(seed=SEED)
    other = sr.datasets.demo(seed=1)
    reference = sr.datasets.measure_demo_truth(other, bin_um=50.0, seed=1, footprint="disk")
    genes = list(sr.pp.build_st_map(target, IMAGE, scale=SCALE, n_top_genes=8).genes)
    common = {"scale": SCALE, "genes": genes, "seed": SEED, "show_progress_bar": False, "inplace": False}
    fast = {**PRESETS["tiny"].to_dict(), **TINY}
    learned = {**HISTOLOGY_PRESETS["tiny"].to_dict(), "encoder_steps": 30}
    models = {
        "diffusion": sr.tl.train(
            target, IMAGE, scale=SCALE, genes=genes, config=fast, seed=SEED, show_progress_bar=False
        ),
        "diffusion_base": sr.tl.train(
            target,
            IMAGE,
            scale=SCALE,
            genes=genes,
            config={**fast, "histology_base": True},
            seed=SEED,
            show_progress_bar=False,
        ),
        "histology_reference": sr.tl.train(
            [reference],
            image_key=["he"],
            reference=True,
            target=target,
            scale=SCALE,
            genes=genes,
            seed=SEED,
            method="histology",
            show_progress_bar=False,
        ),
        "diffusion_reference": sr.tl.train(
            [reference],
            image_key=["he"],
            reference=True,
            target=target,
            scale=SCALE,
            genes=genes,
            seed=SEED,
            config=fast,
            method="diffusion",
            show_progress_bar=False,
        ),
        # One reference without a target: Visium's geometry.
        "diffusion_reference_alone": sr.tl.train(
            reference,
            image_key="he",
            reference=True,
            scale=SCALE,
            genes=genes,
            seed=SEED,
            config=fast,
            method="diffusion",
            show_progress_bar=False,
        ),
    }
    runs = {
        "nearest": {"method": "nearest"},
        "bicubic": {"method": "bicubic"},
        "histology": {"method": "histology", "config": "tiny"},
        "histology_learned": {"method": "histology", "config": learned, "learned_encoder": True},
        **{name: {"model": model} for name, model in models.items()},
        # Trained on the reference within the call, which reads the slide once for both.
        "histology_via_reference": {"method": "histology", "reference": [reference], "reference_image_key": "he"},
        "diffusion_via_reference": {
            "method": "diffusion",
            "config": fast,
            "reference": [reference],
            "reference_image_key": "he",
        },
    }
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, model in models.items():
            model.save(Path(tmp) / name)
            runs[f"{name}_loaded"] = {"model": sr.model.load(Path(tmp) / name)}
        for name, options in runs.items():
            result = sr.tl.superresolve(target, IMAGE, key_added=name, **common, **options)
            out.update(_arrays(result, name))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", type=Path)
    parser.add_argument("--compare", type=Path, default=None)
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    arrays = run()
    np.savez(args.out, **arrays)
    print(f"wrote {len(arrays)} arrays to {args.out}")
    if args.compare is None:
        return
    before = dict(np.load(args.compare))
    differ = sorted(
        k
        for k in before.keys() | arrays.keys()
        if k not in before or k not in arrays or not np.array_equal(before[k], arrays[k], equal_nan=True)
    )
    print("bit-identical" if not differ else f"differ: {differ}")
    sys.exit(1 if differ else 0)


if __name__ == "__main__":
    main()
