"""Make the figures of the docs and README, and the executed tutorial, from the current code.

    python docs/figures/make_figures.py                # all three
    python docs/figures/make_figures.py architecture   # one of them

``architecture`` draws the model diagram (no data needed; ``docs/_static/architecture.png``); ``demo``
super-resolves the demo slide with the default method and plots it with ``sr_spatial.pl.superres``
(``docs/_static/demo_superres.png``, the README's figure; seconds); ``tutorial`` executes
``notebooks/tutorial.ipynb`` top to bottom and stores it with its outputs and figures (about 2 minutes on 2 CPU
cores), recording a hash of its code cells so that ``tests/test_docs.py`` can tell when a code cell was changed
without executing it again.
"""

from __future__ import annotations

import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch

STATIC = Path(__file__).resolve().parents[1] / "_static"

COLOURS = {
    "data": "#e8eef7",
    "histology": "#f6e3ef",
    "measurement": "#e4f2e4",
    "network": "#fff1d6",
    "output": "#ececec",
}


def _box(ax, xy, text, kind, *, width=2.3, height=0.8, fontsize=8.5, bold=False):
    x, y = xy
    patch = FancyBboxPatch(
        (x - width / 2, y - height / 2),
        width,
        height,
        boxstyle="round,pad=0.02,rounding_size=0.12",
        facecolor=COLOURS[kind],
        edgecolor="#555555",
        linewidth=0.9,
    )
    ax.add_patch(patch)
    ax.text(x, y, text, ha="center", va="center", fontsize=fontsize, fontweight="bold" if bold else "normal")
    return (x, y, width, height)


def _arrow(ax, start, end, *, text=None, rad=0.0, offset=(0.0, 0.12)):
    """An arrow from the border of box ``start`` to the border of box ``end``."""

    def anchor(box, towards):
        x, y, w, h = box
        dx, dy = towards[0] - x, towards[1] - y
        if abs(dx) * h > abs(dy) * w:
            return (x + w / 2 * (1 if dx > 0 else -1), y + dy * (w / 2) / max(abs(dx), 1e-9))
        return (x + dx * (h / 2) / max(abs(dy), 1e-9), y + h / 2 * (1 if dy > 0 else -1))

    a = anchor(start, end[:2])
    b = anchor(end, start[:2])
    ax.add_patch(
        FancyArrowPatch(
            a, b, arrowstyle="-|>", mutation_scale=10, color="#333333", linewidth=0.9, connectionstyle=f"arc3,rad={rad}"
        )
    )
    if text:
        ax.text(
            (a[0] + b[0]) / 2 + offset[0], (a[1] + b[1]) / 2 + offset[1], text, fontsize=7, ha="center", color="#333"
        )


def architecture(path: Path = STATIC / "architecture.png") -> Path:
    """The model as implemented in ``sr_spatial.model``: encoders, guided base, modules, denoiser, projection."""
    fig, ax = plt.subplots(figsize=(11, 5.6))
    ax.set_xlim(0, 15.4)
    ax.set_ylim(0, 7.6)
    ax.set_axis_off()

    he = _box(ax, (1.5, 6.3), "H&E image\n(RGB + H, E)", "data")
    spots = _box(ax, (1.5, 2.2), "measured spots\n(log-normalised)", "data")

    encoder = _box(
        ax,
        (4.6, 6.3),
        "histology encoder\n(CNN, no norm layers)\nfitted: mean over a spot\n= that spot",
        "histology",
        height=1.2,
    )
    hist = _box(ax, (7.9, 6.3), "histology estimate\nper bin, every gene", "histology")
    maps = _box(ax, (4.6, 2.2), "spots on the bin grid\nnearest + smooth (cubic)", "measurement")
    base = _box(
        ax,
        (7.9, 4.25),
        "guided base\nper gene: w₁·smooth + w₂·histology\n(weights fit on held-out spots)",
        "measurement",
        width=3.4,
        height=1.0,
    )
    cond = _box(
        ax,
        (7.9, 2.2),
        "condition: nearest, smooth,\nhistology estimate, its detail\nwithin each spot, tissue mask",
        "measurement",
        width=2.7,
        height=1.0,
    )
    noise = _box(ax, (7.9, 0.6), "noise  x_T ~ N(0, I)", "data", width=2.0, height=0.6)
    unet = _box(
        ax,
        (11.35, 1.4),
        "UNet denoiser\n(time-conditioned)\n+ gene graph (GCGN)\nDDIM, 25 steps",
        "network",
        height=1.3,
        bold=False,
    )
    cmam = _box(
        ax,
        (4.6, 4.25),
        "disentangling + CMAM\nshared / specific features\ngated scale & shift\nat every UNet level",
        "network",
        width=2.5,
        height=1.2,
    )
    attention = _box(
        ax,
        (11.35, 6.3),
        "dynamic cross-attention\ncell tokens (¼ bin) and\ntissue tokens (4×4 bins),\ntime-gated, windowed",
        "network",
        width=2.6,
        height=1.2,
    )
    draw = _box(ax, (11.35, 4.25), "n draws = base + residual", "network", width=2.6)
    project = _box(
        ax,
        (13.7, 4.25),
        "project each draw\nonto the spots\n(bins average\nto each spot)",
        "output",
        width=2.0,
        height=1.3,
    )
    out = _box(
        ax,
        (13.7, 1.4),
        "mean → image (c = genes)\nsd → uncertainty\nbins + AnnData table",
        "output",
        width=2.6,
        height=1.1,
    )

    _arrow(ax, he, encoder)
    _arrow(ax, encoder, hist)
    _arrow(ax, spots, maps)
    _arrow(ax, spots, encoder, text="labels", rad=-0.25, offset=(-0.55, 0.0))
    _arrow(ax, hist, base)
    _arrow(ax, maps, base)
    _arrow(ax, maps, cond)
    _arrow(ax, cond, unet)
    _arrow(ax, encoder, cmam)
    _arrow(ax, maps, cmam)
    _arrow(ax, cmam, unet, rad=0.35)
    _arrow(ax, hist, attention, text="cell features", offset=(0.0, 0.15))
    _arrow(ax, attention, unet, rad=0.28)
    _arrow(ax, noise, unet)
    _arrow(ax, unet, draw, text="residual", offset=(0.45, 0.0))
    _arrow(ax, base, draw)
    _arrow(ax, draw, project)
    _arrow(ax, project, out)

    ax.text(0.2, 7.35, "sr_spatial.model.DiffST", fontsize=11, fontweight="bold")
    ax.text(
        0.2,
        0.05,
        "Training (scale transfer): the same network learns to recover the measured spots from spots pooled "
        "s-fold, with the H&E at the matching resolution.",
        fontsize=7.5,
        color="#333",
    )
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=150, metadata={"Software": None})
    plt.close(fig)
    return path


def demo(path: Path = STATIC / "demo_superres.png") -> Path:
    """The demo slide super-resolved with the default configuration, as ``pl.superres`` draws it."""
    import sr_spatial as sr

    sdata = sr.datasets.demo(seed=0)
    sr.tl.superresolve(sdata, "demo_full_image", scale=4, key_added="sr", seed=0)
    axes = sr.pl.superres(sdata, ["gene_00", "gene_10", "gene_20"], key="sr", truth_key="demo_truth", show=False)
    fig = axes[0].figure
    fig.savefig(path, dpi=90, bbox_inches="tight", metadata={"Software": None})
    plt.close(fig)
    return path


NOTEBOOK = Path(__file__).resolve().parents[2] / "notebooks" / "tutorial.ipynb"


def code_hash(notebook) -> str:
    """SHA-256 of a notebook's code cells, in order: what its stored outputs were computed from."""
    import hashlib

    sources = [cell.source for cell in notebook.cells if cell.cell_type == "code"]
    return hashlib.sha256("\n\x00".join(sources).encode()).hexdigest()


def tutorial(path: Path = NOTEBOOK) -> Path:
    """Execute the tutorial in place, keeping its outputs (figures included) in the stored notebook."""
    import nbformat
    from nbclient import NotebookClient

    notebook = nbformat.read(path, as_version=4)
    for index, cell in enumerate(notebook.cells):
        cell.id = f"cell-{index:02d}"  # stable ids, so a re-run changes only outputs
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
            cell.metadata.pop("execution", None)
    NotebookClient(notebook, timeout=900, kernel_name="python3", record_timing=False).execute(cwd=str(path.parent))
    notebook.metadata["sr_spatial"] = {"executed_code_sha256": code_hash(notebook)}
    nbformat.write(notebook, path)
    return path


if __name__ == "__main__":
    wanted = sys.argv[1:] or ["architecture", "demo", "tutorial"]
    for name in wanted:
        print(globals()[name]())
