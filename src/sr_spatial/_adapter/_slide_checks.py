"""Checks that a slide's elements fit together, made before any pixel is read: registrations, ids, columns."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from sr_spatial._adapter._elements import affine_xy

if TYPE_CHECKING:
    from anndata import AnnData

__all__ = ["check_placements_agree", "check_table_columns", "check_unique_index", "shapes_to_pixels"]


def shapes_to_pixels(image_tf: dict, shapes_tf: dict, cs: str) -> np.ndarray:
    """The affine map shapes -> coordinate system ``cs`` -> the image's full-resolution pixels (3 x 3, xy)."""
    return np.linalg.inv(affine_xy(image_tf[cs])) @ affine_xy(shapes_tf[cs])


def check_placements_agree(image_tf, shapes_tf, cs: str, shapes, *, image_key: str, shapes_key: str) -> None:
    """Refuse coordinate systems shared by image and spots that place the spots at different image pixels.

    Each shared system is a registration of the spots to the image; where two disagree, using the first would
    silently read the H&E under the wrong tissue.
    """
    common = [other for other in image_tf if other in shapes_tf and other != cs]
    if not common or len(shapes) == 0:
        return
    x0, y0, x1, y1 = shapes.total_bounds
    corners = np.array([[x0, y0, 1], [x1, y0, 1], [x0, y1, 1], [x1, y1, 1]], dtype=float)
    placed = corners @ shapes_to_pixels(image_tf, shapes_tf, cs).T
    for other in common:
        moved = corners @ shapes_to_pixels(image_tf, shapes_tf, other).T
        apart = float(np.max(np.hypot(*(moved - placed)[:, :2].T)))
        if apart > 1.0:
            msg = (
                f"Image {image_key!r} and shapes {shapes_key!r} share coordinate systems {cs!r} and {other!r} that "
                f"place the spots {apart:.0f} px apart on the image: the spots' corner ({x0:.6g}, {y0:.6g}) lies at "
                f"image pixel ({placed[0, 0]:.1f}, {placed[0, 1]:.1f}) in {cs!r} and ({moved[0, 0]:.1f}, "
                f"{moved[0, 1]:.1f}) in {other!r}. Pass `coordinate_system=` naming the one that registers the "
                "spots to this image."
            )
            raise ValueError(msg)


def check_table_columns(table: AnnData, table_key: str, *, region_key: str, instance_key: str) -> None:
    """Refuse a table whose region or instance column, named in its ``spatialdata_attrs``, is not in ``obs``."""
    for role, column in (("region", region_key), ("instance", instance_key)):
        if column not in table.obs:
            msg = (
                f"Table {table_key!r} names {column!r} as its {role} column (`uns['spatialdata_attrs']"
                f"['{role}_key']`) but `obs` has no such column (its columns: {list(table.obs.columns)[:10]}). Put the "
                f"column back, or parse the table again with `TableModel.parse(adata, region=..., region_key=..., "
                "instance_key=...)`."
            )
            raise ValueError(msg)


def check_unique_index(shapes, shapes_key: str) -> None:
    """Refuse shapes whose index (the spot ids the table's instance column names) repeats a value."""
    repeated = shapes.index[shapes.index.duplicated()]
    if len(repeated):
        msg = (
            f"Shapes {shapes_key!r} repeat {len(repeated)} index values (e.g. {repeated[:3].tolist()}), so the "
            "table's rows cannot be matched to one spot each. Give every spot its own id in the shapes' index "
            "(the values of the table's instance column), e.g. by reading the slide again."
        )
        raise ValueError(msg)
