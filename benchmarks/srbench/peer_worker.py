"""Run a peer method in its own environment (``$SR_SPATIAL_PEERS_PYTHON``), never importing sr_spatial.

Usage: ``<peers python> benchmarks/srbench/peer_worker.py tesla in.npz out.npz``. ``in.npz`` holds the H&E ``image``
(y, x, 3 uint8), the known spots' ``known_xy`` (image pixels, x then y) and log-normalised ``known_values``,
the ``query_xy`` where expression is wanted, the spot ``radius`` in image pixels and ``genes``. ``out.npz``
gets ``prediction`` (n_query, n_genes), log-normalised.
"""

from __future__ import annotations

import sys

import numpy as np


class _Table:
    """The part of AnnData that TESLA's ``imputation`` uses for its output: ``X``, ``obs``, ``var``, ``shape``."""

    def __init__(self, X):
        self.X = X
        self.obs = None
        self.var = None

    @property
    def shape(self):
        return self.X.shape


def tesla(data: dict) -> np.ndarray:
    """TESLA (teslaforst) ``imputation``: superpixels on a grid, inverse-distance weighting in (x, y, colour).

    The tissue contour is the convex hull of the query spots grown by one spot radius (TESLA's own contour
    detection needs per-slide tuning). Superpixels are ``res`` = radius / 1.1 pixels apart, so several fall in
    each spot disk; a spot takes the mean (linear expression) of the superpixels in its disk.
    """
    import cv2
    import pandas as pd
    import TESLA as tesla_pkg
    from anndata import AnnData
    from scipy.spatial import cKDTree

    image, radius = data["image"], float(data["radius"])
    genes = [str(g) for g in data["genes"]]
    known = AnnData(X=np.asarray(data["known_values"], dtype=np.float64))
    known.var_names = genes
    known.obs_names = [f"k{i}" for i in range(known.n_obs)]
    # TESLA's x is the image row, y the column.
    known.obs["pixel_x"] = data["known_xy"][:, 1]
    known.obs["pixel_y"] = data["known_xy"][:, 0]
    query = np.asarray(data["query_xy"], dtype=np.float64)
    hull = cv2.convexHull(query.astype(np.float32))
    centre = hull.reshape(-1, 2).mean(axis=0)
    direction = hull.reshape(-1, 2) - centre
    grown = (
        hull.reshape(-1, 2) + direction / np.maximum(np.linalg.norm(direction, axis=1, keepdims=True), 1e-9) * radius
    )
    cnt = np.round(grown).astype(np.int32).reshape(-1, 1, 2)
    res = max(int(round(radius / 1.1)), 2)
    # TESLA builds its output AnnData from a frame with an integer index and then looks rows up by those
    # integers; current anndata turns the index into strings, which breaks the lookup (KeyError: '0'). A plain
    # holder that keeps the frame as given restores the behaviour TESLA was written against.
    # (The package re-exports the function under the module's name, so reach the module through sys.modules.)
    sys.modules[tesla_pkg.imputation.__module__].AnnData = _Table
    imputed = tesla_pkg.imputation(
        img=image, raw=known, cnt=cnt, genes=genes, shape="None", res=res, s=1, k=2, num_nbs=10
    )
    sx = imputed.obs["y"].to_numpy(dtype=float)  # column
    sy = imputed.obs["x"].to_numpy(dtype=float)  # row
    values = np.asarray(imputed.X, dtype=np.float64)
    values = pd.DataFrame(values, columns=list(imputed.var.index))[genes].to_numpy()
    tree = cKDTree(np.column_stack([sx, sy]))
    out = np.empty((len(query), len(genes)))
    linear = np.expm1(np.clip(values, 0, None))
    for i, members in enumerate(tree.query_ball_point(query, r=radius)):
        if not members:
            members = [int(tree.query(query[i])[1])]
        out[i] = linear[members].mean(axis=0)
    return np.log1p(out)


def main() -> None:
    method, source, target = sys.argv[1:4]
    data = dict(np.load(source, allow_pickle=False))
    prediction = {"tesla": tesla}[method](data)
    np.savez(target, prediction=prediction)


if __name__ == "__main__":
    main()
