"""Parameter descriptions shared by several public functions, so they are written once."""

from __future__ import annotations

import inspect

__all__ = ["doc_params", "doc_show_save", "doc_slide"]

doc_slide = """\
sdata
    The slide, e.g. from :func:`spatialdata_io.visium`.
image_key
    H&E image element; the grid of bins lives in its full-resolution pixel space.
table_key
    Table of raw counts that annotates the spots.
shapes_key
    Spots (circles or square bins); default: the shapes the table annotates.
n_top_genes
    Without ``genes``: how many genes to take, the variable genes detected in most spots
    (:func:`sr_spatial.pp.select_genes`).
scale
    Bins per spot pitch along each axis (4 turns Visium's 100 µm pitch into 25 µm bins).
coordinate_system
    Coordinate system shared by image and spots; default: the first they share.
stain
    How the image shows the tissue: ``"brightfield"`` (an H&E, dark tissue on light glass), ``"fluorescence"``
    (bright tissue on a dark background, read inverted so nuclei read dark on white as in an H&E), or
    ``"auto"`` (default): decided from the tissue under the spots against the glass around it, with a warning
    where it cannot tell (e.g. no background in sight). Black padding or transparent corners do not count."""

doc_show_save = """\
show
    Show the figure; default: show unless ``save`` is given.
save
    Write the figure to this path.
dpi
    Resolution of the saved figure."""


def doc_params(**kwds: str):
    """Replace ``{name}`` placeholders in a docstring with shared parameter text (like scanpy's ``_doc_params``).

    Only the named placeholders are replaced, so docstrings may hold other braces (``f"{key}_std"``).
    """

    def decorate(obj):
        doc = inspect.cleandoc(obj.__doc__)
        for name, text in kwds.items():
            doc = doc.replace("{" + name + "}", text)
        obj.__doc__ = doc
        return obj

    return decorate
