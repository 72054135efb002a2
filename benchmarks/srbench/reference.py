"""Reference bins drawn from the demo slide's hidden truth (``reference_training.py``, ``hd_truth.py``,
``demo_reference.py``): :func:`sr_spatial.datasets.measure_demo_truth`."""

from __future__ import annotations


def reference_slide(
    sdata,
    *,
    bin_um: float,
    split_px: float | None,
    umis_per_um2: float,
    seed: int,
    footprint: str = "square",
):
    """Units with Poisson counts from the demo truth, over the tissue left of ``split_px`` (``None``: all of it)."""
    import sr_spatial as sr

    return sr.datasets.measure_demo_truth(
        sdata, bin_um=bin_um, umis_per_um2=umis_per_um2, seed=seed, footprint=footprint, split_px=split_px
    )
