"""Protocol 2a, downsampled Visium: pool a Visium slide's spots into coarser pseudo-spots, super-resolve back.

Usage::

    python benchmarks/downsampled_visium.py [--visium PATH/outs] [--seeds 0] [--config base]
        [--methods nearest cubic ...] [--n-genes 50] [--out benchmarks/results/downsampled_visium.md]

The slide is a spaceranger ``outs/`` folder from ``--visium``, else ``$SR_SPATIAL_VISIUM``, else
``$SR_SPATIAL_DATA/visium`` (default ``../shared/data/visium``) where it exists, read with
:func:`spatialdata_io.visium`; without any, the synthetic demo slide (:func:`sr_spatial.datasets.demo`,
Visium-like: 55 µm spots on a 100 µm hexagonal lattice; ``--demo-seed``).

Pooling: the hexagonal lattice is split into groups of four neighbouring spots (a spot and its neighbours at
0°, 60° and 120°), whose raw counts are summed. The groups tile the slide, and their centres form a hexagonal
lattice of twice the pitch (200 µm): the measurement a Visium with twice the spot pitch would have made, each
pseudo-spot counting the four spots under it. Every method predicts the measured spots from the pseudo-spots
and the H&E; ``sr_spatial`` super-resolves the pseudo-spot slide 2x (100 µm bins, the measured pitch) and each
measured spot reads the mean of the map over its 55 µm disk (area-weighted over the bins it straddles).

Each (seed, method family) runs in a fresh child process, so wall time and peak memory (max RSS, reading the
slide included) are its own. Prints a Markdown table and writes it, with the command, data, seeds and machine,
to ``--out``; per-gene scores go to the same name with ``.csv``, and a figure to ``.png``.
"""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from srbench import protocol as _protocol
from srbench.protocol import LABELS, lognorm

VISIUM_ENV = "SR_SPATIAL_VISIUM"
SPOT_PITCH_UM = 100.0


@dataclass(frozen=True)
class VisiumSlide:
    """A Visium slide as arrays: raw ``counts`` (spots x genes), lattice ``array`` = ``(array_col, array_row)``,
    spot ``centres`` in full-resolution pixels of coordinate system ``cs``, the H&E ``image`` (3, y, x) uint8
    ``downscale`` times coarser, and the spot radius in full-resolution pixels."""

    name: str
    counts: np.ndarray
    genes: np.ndarray
    spot_ids: np.ndarray
    array: np.ndarray
    centres: np.ndarray
    image: np.ndarray
    downscale: float
    radius_px: float
    cs: str


def read_visium(sdata, *, name: str) -> VisiumSlide:
    """The spots under tissue, their counts and the hires H&E of a SpatialData laid out as spatialdata-io writes it.

    Works for :func:`spatialdata_io.visium` output and for :func:`sr_spatial.datasets.demo`.
    """
    from scipy import sparse
    from spatialdata.transformations import get_transformation

    from sr_spatial.tl import full_resolution as single_scale

    table = sdata.tables["table"]
    attrs = table.uns["spatialdata_attrs"]
    region = attrs["region"] if isinstance(attrs["region"], str) else attrs["region"][0]
    shapes = sdata.shapes[region]
    cs = next(iter(get_transformation(shapes, get_all=True)))
    if "in_tissue" in table.obs:
        table = table[table.obs["in_tissue"].to_numpy() == 1]
    ids = table.obs[attrs["instance_key"]].to_numpy()
    geometry = shapes.loc[ids]
    centres = np.column_stack([geometry.geometry.x, geometry.geometry.y]).astype(np.float64)
    hires = [k for k in sdata.images if k.endswith("_hires_image")]
    if not hires:
        msg = f"No '*_hires_image' in the slide (images: {sorted(sdata.images)}); read it with spatialdata_io.visium."
        raise KeyError(msg)
    image = sdata.images[hires[0]]
    affine = get_transformation(image, to_coordinate_system=cs).to_affine_matrix(
        input_axes=("x", "y"), output_axes=("x", "y")
    )
    counts = table.X.toarray() if sparse.issparse(table.X) else np.asarray(table.X)
    rgb = np.asarray(single_scale(image).values)[:3]
    return VisiumSlide(
        name=name,
        counts=counts.astype(np.float32),
        genes=table.var_names.astype(str).to_numpy(),
        spot_ids=np.asarray(table.obs_names.astype(str)),
        array=table.obs[["array_col", "array_row"]].to_numpy(dtype=np.int64),
        centres=centres,
        image=rgb.astype(np.uint8) if rgb.dtype != np.uint8 else rgb,
        downscale=float(affine[0, 0]),
        radius_px=float(np.asarray(geometry["radius"]).mean()),
        cs=cs,
    )


def load_slide(path: str | os.PathLike | None, *, demo_seed: int = 0) -> VisiumSlide:
    """``path``, else ``$SR_SPATIAL_VISIUM``, else ``<data root>/visium`` read with :func:`spatialdata_io.visium`;
    else the demo slide."""
    path = _protocol.data_path(path, VISIUM_ENV, "visium")
    if path:
        import spatialdata_io

        return read_visium(spatialdata_io.visium(path), name=Path(path).resolve().name)
    return demo_slide(seed=demo_seed)


def demo_slide(*, seed: int = 0) -> VisiumSlide:
    """The synthetic demo slide (:func:`sr_spatial.datasets.demo`), Visium-like, as a :class:`VisiumSlide`."""
    import sr_spatial as sr

    return read_visium(sr.datasets.demo(seed=seed, include_truth=False), name=f"demo (seed {seed})")


@dataclass(frozen=True)
class HexPool:
    """``group[i]``: the pseudo-spot of measured spot ``i``; pseudo-spot counts (summed), centres and radius."""

    group: np.ndarray
    counts: np.ndarray
    centres: np.ndarray
    array: np.ndarray
    radius_px: float


def pool_hex(slide: VisiumSlide) -> HexPool:
    """Pool the spots in groups of four on the hexagonal lattice (raw counts summed), giving a 2x coarser lattice.

    In lattice coordinates ``i = (array_col - array_row) / 2``, ``j = array_row`` (unit steps are neighbours), a
    group is the spot with even ``i`` and ``j`` and its neighbours at ``(i+1, j)``, ``(i, j+1)`` and
    ``(i-1, j+1)``. Every spot falls in exactly one group; the groups' centres (the mean of the four lattice
    positions, also where only some lie under tissue) form a hexagonal lattice of twice the pitch. A
    pseudo-spot's radius encloses the four disks it pools.
    """
    col, row = slide.array[:, 0], slide.array[:, 1]
    i, j = (col - row) // 2, row
    odd_i, odd_j = i % 2 == 1, j % 2 == 1
    ci = np.where(odd_i & ~odd_j, i - 1, np.where(odd_i & odd_j, i + 1, i))
    cj = np.where(odd_j, j - 1, j)
    keys, group = np.unique(np.column_stack([ci, cj]), axis=0, return_inverse=True)
    group = group.ravel()
    counts = np.zeros((len(keys), slide.counts.shape[1]), dtype=np.float64)
    np.add.at(counts, group, slide.counts)
    # Lattice (array_col, array_row) -> pixels, least squares; the group centre is at (i, j + 1/2).
    design = np.column_stack([slide.array, np.ones(len(slide.array))])
    coef, *_ = np.linalg.lstsq(design, slide.centres, rcond=None)
    centre_col, centre_row = 2 * keys[:, 0] + keys[:, 1] + 0.5, keys[:, 1] + 0.5
    centres = np.column_stack([centre_col, centre_row, np.ones(len(keys))]) @ coef
    pitch_px = float(np.linalg.norm(2 * coef[0]))  # two array columns are one lattice step
    radius = np.sqrt(3.0) / 2.0 * pitch_px + slide.radius_px
    coarse = np.column_stack([keys[:, 0] + keys[:, 1] // 2, keys[:, 1] // 2])
    return HexPool(group=group, counts=counts.astype(np.float32), centres=centres, array=coarse, radius_px=radius)


def build_task(slide: VisiumSlide, *, n_genes: int) -> dict:
    """The inputs :func:`_protocol.run_methods` needs: pseudo-spots as the measurement, measured spots as truth."""
    pool = pool_hex(slide)
    pooled_all = lognorm(pool.counts.astype(np.float64))
    order = np.argsort(-pooled_all.mean(axis=0), kind="stable")[:n_genes]
    genes = slide.genes[order].tolist()

    def sdata():
        return _protocol.spots_sdata(
            image=slide.image,
            downscale=slide.downscale,
            cs=slide.cs,
            counts=pool.counts,
            genes=slide.genes,
            centres=pool.centres,
            radius_px=pool.radius_px,
            spot_ids=[f"P{a}_{b}" for a, b in pool.array],
            array=pool.array,
        )

    # SSIM runs on the lattice drawn as an image: one pixel per spot at (array_col // 2, array_row), so odd rows
    # sit half a spot off (a sheared hexagon).
    lattice = np.column_stack([slide.array[:, 0] // 2, slide.array[:, 1]])
    return {
        "sdata": sdata,
        "image": slide.image,
        "downscale": slide.downscale,
        "cs": slide.cs,
        "genes": genes,
        "scale": 2,
        "known_xy": pool.centres,
        "known_values": pooled_all[:, order],
        "known_radius": pool.radius_px,
        "query_xy": slide.centres,
        "query_radius": slide.radius_px,
        "read_radius": slide.radius_px,
        "truth": lognorm(slide.counts.astype(np.float64))[:, order],
        "lattice": lattice,
        "group": pool.group,
        "n_pseudo": len(pool.centres),
        "n_spots": len(slide.centres),
    }


def run_downsampled_visium(
    *, visium=None, demo_seed: int = 0, methods=("nearest", "cubic"), config="base", seed: int = 0, n_genes: int = 50
):
    """Load the slide, pool it and score ``methods`` (one row per method and gene, column ``data`` = the slide)."""
    slide = load_slide(visium, demo_seed=demo_seed)
    task = build_task(slide, n_genes=n_genes)
    frame = _protocol.run_methods(task, methods=methods, config=config, seed=seed)
    frame["data"] = slide.name
    frame["n_spots"], frame["n_pseudo"] = task["n_spots"], task["n_pseudo"]
    return frame


TITLE = "Downsampled Visium: 4-spot pseudo-spots super-resolved back to the measured spots"
INTRO = (
    "Protocol 2a: a Visium slide's spots (55 µm, 100 µm hexagonal lattice) are pooled four at a time (a spot and "
    "its neighbours at 0°, 60° and 120°; raw counts summed) into pseudo-spots on a 200 µm hexagonal lattice; "
    "every method predicts the measured spots from the pseudo-spots and the H&E. Scores are in log-normalised "
    "units (counts per 10^4, log1p) against each measured spot, per gene and then averaged over genes (and "
    "seeds; `pearson_sd` is the spread across seeds). `pearson`: across spots; `pearson_within`: of deviations "
    "from the pseudo-spot mean, over pseudo-spots pooling 2-4 spots (only the detail the pooled measurement does "
    "not fix; undefined for `nearest`); `ssim`: on the spot lattice drawn as an image (one pixel per spot at "
    "`(array_col // 2, array_row)`); `rmse`; `spot_residual`: relative disagreement of the spots' mean with "
    "their pseudo-spot (linear units, 0 = consistent); `wall_s`: the method's time (sr_spatial: training and "
    "sampling at scale 2, 100 µm bins; each measured spot reads the map's mean over its disk); `peak_mib`: max "
    "RSS of the method's child process, reading the slide included. `+ projection` rescales each pseudo-spot's "
    "spots so that they average exactly to it."
)
PAGE = {
    "title": TITLE,
    "intro": INTRO,
    "labels": LABELS,
    "figure_titles": {
        "pearson": "{name}: at the measured spots",
        "pearson_within": "{name}: within pseudo-spots (detail the pooling removed)",
    },
    "genes_from": "the pseudo-spots",
}


#: ``benchmarks/results``, where the page goes by default.
RESULTS = Path(__file__).resolve().parents[1] / "results"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--visium", default=None, help=f"spaceranger outs/ folder (default ${VISIUM_ENV}, else demo)")
    parser.add_argument("--demo-seed", type=int, default=0)
    parser.add_argument("--n-genes", type=int, default=50)
    _protocol.add_common_arguments(parser, out=RESULTS / "downsampled_visium.md")
    args = parser.parse_args()

    where = _protocol.data_path(args.visium, VISIUM_ENV, "visium")
    source = (
        f"Visium slide `{where}` (spatialdata_io.visium)"
        if where
        else f"synthetic demo slide `sr_spatial.datasets.demo(seed={args.demo_seed})` (no Visium slide given: "
        f"`--visium` / `${VISIUM_ENV}`)"
    )

    def describe(per_gene):
        n_spots, n_pseudo = int(per_gene["n_spots"].iloc[0]), int(per_gene["n_pseudo"].iloc[0])
        data = f"{source}; {n_spots} spots pooled into {n_pseudo} pseudo-spots"
        return data, f"{args.config}, scale 2", ["n_spots", "n_pseudo"]

    page = _protocol.run_protocol(
        args,
        script="downsampled_visium.py",
        fn=run_downsampled_visium,
        page=PAGE,
        describe=describe,
        visium=args.visium,
        demo_seed=args.demo_seed,
        n_genes=args.n_genes,
    )
    print(page)


if __name__ == "__main__":
    main()
