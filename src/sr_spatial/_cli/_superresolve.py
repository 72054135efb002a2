"""``sr-spatial superresolve``: super-resolve a slide stored as SpatialData zarr, or read from Space Ranger."""

from __future__ import annotations

import argparse
import logging
import os
import textwrap
import time
from pathlib import Path

from sr_spatial._cli._common import (
    Formatter,
    UserError,
    check_not_in_store,
    check_out,
    is_zarr,
    zarr_notice_hidden,
)

logger = logging.getLogger("sr_spatial")

DESCRIPTION = """\
Super-resolve the spot expression of a slide onto bins SCALE times finer than the spot pitch, guided by its
H&E, and write the result next to the slide: an image whose channels are genes, its per-bin standard
deviation, square bins and an AnnData table with one row per bin (for scanpy and squidpy).

SLIDE is a SpatialData zarr store (as `spatialdata.SpatialData.write` or this command writes it) or a Visium
Space Ranger output folder (`outs/`, read with spatialdata-io). A zarr store is updated in place: only the
new elements are added, and existing ones are never changed (elements of an earlier run with the same
--key-added are replaced only with --overwrite). Each element is written beside its place in the store and moved
there when complete, so a failed or interrupted run (Ctrl-C: exit status 130) leaves the store as it was. A Space
Ranger folder is never written into: pass --out. --out and --image-store must lie outside the slide (and not
hold it), compared as real paths."""

EPILOG = """\
examples:
  sr-spatial superresolve slide.zarr --image-key slide1_hires_image
  sr-spatial superresolve slide.zarr --genes ERBB2,CD74,KRT8 --scale 4 --key-added erbb2_4x
  sr-spatial superresolve Visium_outs/ --fullres-image tissue_image.tif --out slide1.zarr
  sr-spatial superresolve slide.zarr --model my_model    # a HistologyModel or DiffST saved with .save()
  sr-spatial superresolve slide.zarr --config '{"learned_encoder": true}'
  sr-spatial superresolve slide.zarr --method diffusion --config tiny

In Python: sr_spatial.tl.superresolve(sdata, image_key, ...) with the same options."""

# Images named as spatialdata-io names a Visium slide's H&E, best first: the bins are the finest on the
# full-resolution image.
_IMAGE_SUFFIXES = ("_full_image", "_hires_image")


def add_parser(sub) -> None:
    """Add the command and its options to the ``sr-spatial`` parser's subcommands."""
    sr = sub.add_parser(
        "superresolve",
        help="super-resolve your own slide (a SpatialData zarr store or a Space Ranger folder)",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=Formatter,
    )
    sr.add_argument("slide", type=Path, metavar="SLIDE", help="SpatialData zarr store or Space Ranger outs/ folder")
    sr.add_argument(
        "--image-key",
        help="H&E image of the slide (default: the only image named *_full_image, else *_hires_image)",
    )
    sr.add_argument("--table-key", default="table", help="table of spot counts")
    sr.add_argument("--shapes-key", help="spot shapes (default: the shapes the table annotates)")
    sr.add_argument(
        "--coordinate-system",
        help="coordinate system that registers the spots to the H&E (default: the one they share; needed where "
        "they share several that place the spots differently)",
    )
    sr.add_argument(
        "--genes",
        help="comma-separated genes to super-resolve (default: the --n-top-genes variable genes detected in most "
        "spots, or a model's genes; with --model, some of the model's genes)",
    )
    sr.add_argument(
        "--n-top-genes", type=int, default=50, help="without --genes: how many variable genes detected in most spots"
    )
    sr.add_argument(
        "--scale",
        type=int,
        help="bins per spot pitch (default: a model's own scale, else 4; 4 on Visium: 25 µm bins)",
    )
    sr.add_argument(
        "--method",
        choices=("histology", "diffusion", "bicubic", "nearest"),
        help="histology (default): the measurement plus the detail the H&E predicts on held-out spots; "
        "diffusion: the diffusion model, trained on the slide (minutes on a CPU); bicubic and nearest: baselines. "
        "With --model, the model's own kind",
    )
    sr.add_argument(
        "--model",
        type=Path,
        help="folder of a fitted model saved with HistologyModel.save() or DiffST.save() (either kind)",
    )
    sr.add_argument(
        "--config",
        default="base",
        help="the method's configuration when fitting on the slide: a preset (tiny, base, large), a JSON object "
        "of its fields (e.g. '{\"learned_encoder\": true}') or a .json file of one (default: base)",
    )
    sr.add_argument("--key-added", help="name of the outputs (default: IMAGE_KEY_superres)")
    sr.add_argument("--seed", type=int, default=0, help="random seed")
    sr.add_argument("--device", default="auto", help="auto (CUDA, then MPS, then CPU), cpu, cuda, cuda:1 or mps")
    sr.add_argument(
        "--image-store",
        type=Path,
        help="zarr folder (outside the slide, not holding it) the super-resolved images are computed into block by "
        "block, for slides too large for memory (default: in memory)",
    )
    sr.add_argument(
        "--out",
        type=Path,
        help="write the slide with the result to this new zarr store, outside the slide, instead (required for a "
        "Space Ranger folder)",
    )
    sr.add_argument("--dataset-id", help="Space Ranger folder only: dataset id (default: read by spatialdata-io)")
    sr.add_argument(
        "--fullres-image",
        help="Space Ranger folder only: the full-resolution H&E file (e.g. tissue_image.tif), relative to the folder",
    )
    sr.add_argument("--overwrite", action="store_true", help="replace the outputs of an earlier run with this key")
    sr.add_argument("--quiet", action="store_true", help="no progress bars and no log lines, only the summary")


def _is_space_ranger(path: Path) -> bool:
    if not path.is_dir() or is_zarr(path):
        return False
    return (path / "spatial").is_dir() or any(path.glob("*filtered_feature_bc_matrix.h5"))


def _read_slide(args: argparse.Namespace):
    """The slide: a zarr store (its elements read lazily) or a Space Ranger folder read with spatialdata-io."""
    import spatialdata as sd

    path = args.slide
    if not path.exists():
        msg = f"{path} does not exist; pass a SpatialData zarr store or a Space Ranger outs/ folder."
        raise UserError(msg)
    if _is_space_ranger(path):
        if args.out is None:
            msg = (
                f"{path} is a Space Ranger folder, which is not written into; pass --out SLIDE.zarr to write the "
                "slide with the result to a new zarr store."
            )
            raise UserError(msg)
        import spatialdata_io

        kwargs = {"dataset_id": args.dataset_id, "fullres_image_file": args.fullres_image}
        print(f"Reading the Space Ranger folder {path} with spatialdata_io.visium ...", flush=True)
        return spatialdata_io.visium(path, **{k: v for k, v in kwargs.items() if v is not None})
    if args.dataset_id is not None or args.fullres_image is not None:
        msg = "--dataset-id and --fullres-image are for a Space Ranger folder; SLIDE is read as a zarr store."
        raise UserError(msg)
    from sr_spatial._cli._atomic import recover

    recover(path)  # an element a killed run had moved aside is put back before the store is read
    try:
        sdata = sd.read_zarr(path)
    except Exception as error:  # any reader failure means the same to the user
        msg = (
            f"Could not read {path} as a SpatialData zarr store ({type(error).__name__}: {error}). Pass a store "
            "written by SpatialData.write, or a Space Ranger outs/ folder."
        )
        raise UserError(msg) from error
    if not any(True for _ in sdata.gen_elements()):
        msg = (
            f"{path} is a zarr store but not a SpatialData (no images, shapes or tables in it)"
            f"{'; it is the image store of an earlier run (--image-store)' if _is_image_store(path) else ''}. Pass the "
            "slide's zarr store, as SpatialData.write writes it, or a Space Ranger outs/ folder."
        )
        raise UserError(msg)
    return sdata


def _is_image_store(path: Path) -> bool:
    import zarr

    from sr_spatial.tl._store import MARK

    try:
        return MARK in zarr.open_group(path, mode="r").attrs
    except Exception:  # noqa: BLE001 (any reader failure: not an image store)
        return False


def _choose_image(sdata, image_key: str | None) -> str:
    images = list(sdata.images)
    if image_key is not None:
        if image_key not in sdata.images:
            msg = f"Image {image_key!r} is not in the slide; its images: {images}. Pass one with --image-key."
            raise UserError(msg)
        return image_key
    for suffix in _IMAGE_SUFFIXES:
        found = [name for name in images if name.endswith(suffix)]
        if len(found) == 1:
            return found[0]
    if len(images) == 1:
        return images[0]
    msg = f"Choose the H&E image with --image-key; the slide's images: {images or 'none'}."
    raise UserError(msg)


def _config(text: str):
    """``--config``: a preset name, a JSON object of the configuration's fields, or a ``.json`` file of one."""
    import json

    text = text.strip()
    if text.startswith("{") or text.endswith(".json"):
        source = text
        if not text.startswith("{"):
            if not Path(text).is_file():
                msg = f"--config {text!r}: no such file; pass a preset (tiny, base, large), a JSON object or a file."
                raise UserError(msg)
            source = Path(text).read_text()
        try:
            config = json.loads(source)
        except json.JSONDecodeError as error:
            msg = f"--config is not valid JSON ({error}); e.g. --config '{{\"learned_encoder\": true}}'."
            raise UserError(msg) from error
        if not isinstance(config, dict):
            msg = "--config must be a JSON object of configuration fields, e.g. '{\"learned_encoder\": true}'."
            raise UserError(msg)
        return config
    return text


def _output_names(key: str) -> dict[str, str]:
    from sr_spatial._adapter._write import output_names

    return output_names(key)


def _on_disk(sdata) -> set[str]:
    """``kind/name`` of every element the slide's store lists."""
    return set(sdata.elements_paths_on_disk())


def _check_paths(args: argparse.Namespace) -> None:
    """Before any work: the folders written (--out, --image-store) neither are, hold nor lie inside another."""
    from sr_spatial._paths import check_apart, relation

    if args.out is not None and relation(args.out, args.slide) == "is":
        msg = "--out is the slide itself; leave --out out to write into the slide's zarr store."
        raise UserError(msg)
    named = {"SLIDE": args.slide, "--model": args.model, "--out": args.out, "--image-store": args.image_store}
    try:
        check_apart(named, inputs=("SLIDE", "--model"))
    except ValueError as error:
        raise UserError(str(error)) from None
    for flag in ("--out", "--image-store"):
        check_not_in_store(named[flag], flag)
    if args.out is not None:
        check_out(args.out, overwrite=args.overwrite)


def _kinds(names: dict[str, str]) -> list[tuple[str, str]]:
    """``(kind, name)`` of the outputs: two images, the bins (shapes) and their table."""
    kinds = {"image": "images", "std": "images", "bins": "shapes", "table": "tables"}
    return [(kinds[role], name) for role, name in names.items()]


def _replaced(args: argparse.Namespace, sdata, names: dict[str, str]) -> list[tuple[str, str]]:
    """The elements of the slide's store the outputs replace; refuses an earlier run's outputs without --overwrite.

    A half-written output of an interrupted run (a folder the store does not list) is replaced without asking.
    """
    from sr_spatial._cli._atomic import half_written

    if not os.access(args.slide, os.W_OK | os.X_OK):
        msg = (
            f"{args.slide} is read-only, so the result cannot be added to it; pass --out NEW.zarr to write the slide "
            "with the result to a new store."
        )
        raise UserError(msg)
    outputs = _kinds(names)
    listed = _on_disk(sdata)
    existing = [(kind, name) for kind, name in outputs if f"{kind}/{name}" in listed]
    if existing and not args.overwrite:
        msg = (
            f"{args.slide} already holds {[name for _, name in existing]} from an earlier run; pass --overwrite to "
            "replace them or --key-added to write under another name."
        )
        raise UserError(msg)
    leftovers = half_written(Path(sdata.path), outputs, listed)
    for kind, name in leftovers:
        print(f"Replacing {kind}/{name}, half-written by an interrupted run, in {args.slide}.", flush=True)
    return existing + leftovers


def run(args: argparse.Namespace) -> int:
    """Run the command; 0 on success."""
    import sr_spatial as sr
    from sr_spatial._cli._atomic import add_elements, write_store

    start = time.perf_counter()
    if args.quiet:
        sr.settings.verbosity = "warning"
    _check_paths(args)
    sdata = _read_slide(args)
    image_key = _choose_image(sdata, args.image_key)
    key = args.key_added or f"{image_key}_superres"
    names = _output_names(key)
    into_store = args.out is None
    replaced = _replaced(args, sdata, names) if into_store else []

    kwargs = {
        "table_key": args.table_key,
        "shapes_key": args.shapes_key,
        "coordinate_system": args.coordinate_system,
        "genes": [g.strip() for g in args.genes.split(",") if g.strip()] if args.genes else None,
        "n_top_genes": args.n_top_genes,
        "scale": args.scale,
        "method": args.method,
        "config": _config(args.config),
        "model": args.model,
        "key_added": key,
        "seed": args.seed,
        "overwrite": args.overwrite,
        "image_store": args.image_store,
        "device": args.device,
    }
    if args.quiet:
        kwargs["show_progress_bar"] = False
    scale = f" ({args.scale}x)" if args.scale is not None else ""
    print(f"Super-resolving {image_key!r} of {args.slide}{scale} ...", flush=True)
    sr.tl.superresolve(sdata, image_key, **kwargs)

    with zarr_notice_hidden():
        if into_store:
            add_elements(sdata, Path(sdata.path), _kinds(names), replace=replaced)
            target = args.slide
        else:
            write_store(sdata, args.out, replace=args.overwrite)
            target = args.out
    _summary(sdata, key, target, time.perf_counter() - start, whole_slide=not into_store)
    return 0


def _summary(sdata, key: str, target: Path, seconds: float, *, whole_slide: bool) -> None:
    names = _output_names(key)
    table = sdata.tables[names["table"]]
    info = table.uns[key]
    image = sdata.images[names["image"]]
    per_gene = list(table.var.columns)
    print()
    print(
        f"Wrote {target.resolve()} in {seconds:.0f} s ({'the slide and ' if whole_slide else ''}method "
        f"{info['params']['method']!r}: {table.n_vars} genes on {table.n_obs} bins of {info['bin_size_px']:.1f} "
        f"image pixels, from {info['n_spots']} spots {info['spot_pitch_px']:.1f} px apart):"
    )
    rows = [
        (f"images['{names['image']}']", f"{table.n_vars} channels (genes) x {image.sizes['y']} x "
         f"{image.sizes['x']} bins, log-normalised expression, NaN outside the tissue"),
        (f"images['{names['std']}']", "per-bin standard deviation (the uncertainty), NaN outside the tissue"),
        (f"shapes['{names['bins']}']", f"{table.n_obs} square bins in the tissue"),
        (f"tables['{names['table']}']", f"AnnData, one row per bin: X, layers['std'], obsm['spatial'], uns['{key}']"),
    ]  # fmt: skip
    width = max(len(name) for name, _ in rows)
    for name, what in rows:
        print(f"  {name:<{width}}  {what}")
    if per_gene:
        lines = textwrap.wrap(", ".join(per_gene), width=100, break_on_hyphens=False)
        print(f"  {'':<{width}}  and var, per gene: " + f"\n  {'':<{width}}    ".join(lines))
    print(f"Open it with: import spatialdata as sd; sdata = sd.read_zarr({str(target)!r})")
