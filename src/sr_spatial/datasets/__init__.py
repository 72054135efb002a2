"""Datasets: a synthetic demo slide with known high-resolution truth, and public 10x slides with H&E."""

from sr_spatial.datasets._demo import demo
from sr_spatial.datasets._reference import measure_demo_truth
from sr_spatial.datasets._tenx import cache_dir, visium_breast_cancer, visium_hd_colon_cancer, xenium_breast_cancer

__all__ = [
    "cache_dir",
    "demo",
    "measure_demo_truth",
    "visium_breast_cancer",
    "visium_hd_colon_cancer",
    "xenium_breast_cancer",
]
