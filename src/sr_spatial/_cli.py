"""The ``sr-spatial`` command: super-resolve your own slide, or the bundled demo slide, without writing Python."""

from __future__ import annotations

import argparse
import logging
import shutil
import sys
import textwrap
import time
import warnings
from pathlib import Path

logger = logging.getLogger("sr_spatial")

DESCRIPTION = """\
Histology-guided super-resolution of spatial transcriptomics, on SpatialData.

  sr-spatial superresolve SLIDE.zarr          super-resolve your own slide, written into its zarr store
  sr-spatial superresolve SPACERANGER/outs --out SLIDE.zarr
                                              read a Visium Space Ranger folder, write slide and result
  sr-spatial demo --out demo.zarr             run every method on the synthetic demo slide and score them

Run `sr-spatial COMMAND --help` for a command's options."""

SUPERRESOLVE_DESCRIPTION = """\
Super-resolve the spot expression of a slide onto bins SCALE times finer than the spot pitch, guided by its
H&E, and write the result next to the slide: an image whose channels are genes, its per-bin standard
deviation, square bins and an AnnData table with one row per bin (for scanpy and squidpy).

SLIDE is a SpatialData zarr store (as `spatialdata.SpatialData.write` or this command writes it) or a Visium
Space Ranger output folder (`outs/`, read with spatialdata-io). A zarr store is updated in place: only the
new elements are added, and existing ones are never changed (elements of an earlier run with the same
--key-added are replaced only with --overwrite). A Space Ranger folder is never written into: pass --out."""

SUPERRESOLVE_EPILOG = """\
examples:
  sr-spatial superresolve slide.zarr --image-key slide1_hires_image
  sr-spatial superresolve slide.zarr --genes ERBB2,CD74,KRT8 --scale 4 --key-added erbb2_4x
  sr-spatial superresolve Visium_outs/ --fullres-image tissue_image.tif --out slide1.zarr
  sr-spatial superresolve slide.zarr --method diffusion --model my_model    # a model saved with DiffST.save()

In Python: sr_spatial.tl.superresolve(sdata, image_key, ...) with the same options."""

DEMO_DESCRIPTION = """\
Generate the synthetic Visium-like demo slide (55 µm spots on a 100 µm lattice, 30 genes, with its hidden
high-resolution truth), super-resolve it 4x with the default histology method, the diffusion model and the
nearest-spot and bicubic baselines, score all four against the truth, and write everything to a zarr store."""

# Images named as spatialdata-io names a Visium slide's H&E, best first: the bins are the finest on the
# full-resolution image.
_IMAGE_SUFFIXES = ("_full_image", "_hires_image")


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("sr-spatial")
    except PackageNotFoundError:  # pragma: no cover - a source tree that is not installed
        return "0.0.0+unknown"


class _Formatter(argparse.RawDescriptionHelpFormatter):
    """Descriptions kept as written (line breaks, examples); a default, where there is one, after the help."""

    def _get_help_string(self, action: argparse.Action) -> str:
        help_text = action.help or ""
        if action.default not in (None, False, argparse.SUPPRESS) and "default" not in help_text:
            help_text += " (default: %(default)s)"
        return help_text


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sr-spatial", description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    sr = sub.add_parser(
        "superresolve",
        help="super-resolve your own slide (a SpatialData zarr store or a Space Ranger folder)",
        description=SUPERRESOLVE_DESCRIPTION,
        epilog=SUPERRESOLVE_EPILOG,
        formatter_class=_Formatter,
    )
    sr.add_argument("slide", type=Path, metavar="SLIDE", help="SpatialData zarr store or Space Ranger outs/ folder")
    sr.add_argument(
        "--image-key",
        help="H&E image of the slide (default: the only image named *_full_image, else *_hires_image)",
    )
    sr.add_argument("--table-key", default="table", help="table of spot counts")
    sr.add_argument("--shapes-key", help="spot shapes (default: the shapes the table annotates)")
    sr.add_argument(
        "--genes",
        help="comma-separated genes to super-resolve (default: the --n-top-genes most highly variable, "
        "or a model's genes)",
    )
    sr.add_argument("--n-top-genes", type=int, default=50, help="number of highly variable genes without --genes")
    sr.add_argument("--scale", type=int, default=4, help="bins per spot pitch (4 on Visium: 25 µm bins)")
    sr.add_argument(
        "--method",
        choices=("histology", "diffusion", "bicubic", "nearest"),
        help="histology (default without --model): the measurement plus the detail the H&E predicts on held-out "
        "spots; diffusion (default with --model): the diffusion model, trained on the slide unless --model is "
        "given (minutes on a CPU); bicubic and nearest: baselines",
    )
    sr.add_argument("--model", type=Path, help="folder of a trained model saved with DiffST.save()")
    sr.add_argument("--key-added", help="name of the outputs (default: IMAGE_KEY_superres)")
    sr.add_argument("--seed", type=int, default=0, help="random seed")
    sr.add_argument("--device", default="auto", help="auto (CUDA, then MPS, then CPU), cpu, cuda, cuda:1 or mps")
    sr.add_argument(
        "--image-store",
        type=Path,
        help="zarr folder (not the slide's) the super-resolved images are computed into block by block, for "
        "slides too large for memory (default: in memory)",
    )
    sr.add_argument(
        "--out",
        type=Path,
        help="write the slide with the result to this new zarr store instead (required for a Space Ranger folder)",
    )
    sr.add_argument("--dataset-id", help="Space Ranger folder only: dataset id (default: read by spatialdata-io)")
    sr.add_argument(
        "--fullres-image",
        help="Space Ranger folder only: the full-resolution H&E file (e.g. tissue_image.tif), relative to the folder",
    )
    sr.add_argument("--overwrite", action="store_true", help="replace the outputs of an earlier run with this key")
    sr.add_argument("--quiet", action="store_true", help="no progress bars and no log lines, only the summary")

    demo = sub.add_parser(
        "demo",
        help="super-resolve the bundled demo slide with every method and score them against its known truth",
        description=DEMO_DESCRIPTION,
        formatter_class=_Formatter,
    )
    demo.add_argument("--out", type=Path, default=Path("demo.zarr"), help="zarr store to write")
    demo.add_argument("--config", default="base", help="diffusion model size: base or tiny (seconds, less accurate)")
    demo.add_argument("--scale", type=int, default=4, help="bins per spot pitch (4: 25 µm bins)")
    demo.add_argument("--seed", type=int, default=0, help="random seed")
    demo.add_argument("--device", default="auto", help="auto, cpu, cuda or mps")
    demo.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    demo.add_argument("--quiet", action="store_true", help="no progress bars")
    return parser


class _UserError(Exception):
    """A problem with the command's arguments or files: printed as one line, exit status 2."""


# --- superresolve --------------------------------------------------------------------------------------------


def _is_space_ranger(path: Path) -> bool:
    if not path.is_dir() or _is_zarr(path):
        return False
    return (path / "spatial").is_dir() or any(path.glob("*filtered_feature_bc_matrix.h5"))


def _read_slide(args: argparse.Namespace):
    """The slide in memory (elements of a zarr store read lazily), and whether it is a Space Ranger folder."""
    import spatialdata as sd

    path = args.slide
    if not path.exists():
        msg = f"{path} does not exist; pass a SpatialData zarr store or a Space Ranger outs/ folder."
        raise _UserError(msg)
    if _is_space_ranger(path):
        if args.out is None:
            msg = (
                f"{path} is a Space Ranger folder, which is not written into; pass --out SLIDE.zarr to write the "
                "slide with the result to a new zarr store."
            )
            raise _UserError(msg)
        import spatialdata_io

        kwargs = {"dataset_id": args.dataset_id, "fullres_image_file": args.fullres_image}
        print(f"Reading the Space Ranger folder {path} with spatialdata_io.visium ...", flush=True)
        return spatialdata_io.visium(path, **{k: v for k, v in kwargs.items() if v is not None}), True
    if args.dataset_id is not None or args.fullres_image is not None:
        msg = "--dataset-id and --fullres-image are for a Space Ranger folder; SLIDE is read as a zarr store."
        raise _UserError(msg)
    try:
        sdata = sd.read_zarr(path)
    except Exception as error:  # any reader failure means the same to the user
        msg = (
            f"Could not read {path} as a SpatialData zarr store ({type(error).__name__}: {error}). Pass a store "
            "written by SpatialData.write, or a Space Ranger outs/ folder."
        )
        raise _UserError(msg) from error
    return sdata, False


def _choose_image(sdata, image_key: str | None) -> str:
    images = list(sdata.images)
    if image_key is not None:
        if image_key not in sdata.images:
            msg = f"Image {image_key!r} is not in the slide; its images: {images}. Pass one with --image-key."
            raise _UserError(msg)
        return image_key
    for suffix in _IMAGE_SUFFIXES:
        found = [name for name in images if name.endswith(suffix)]
        if len(found) == 1:
            return found[0]
    if len(images) == 1:
        return images[0]
    msg = f"Choose the H&E image with --image-key; the slide's images: {images or 'none'}."
    raise _UserError(msg)


def _output_names(key: str) -> dict[str, str]:
    from sr_spatial._adapter._write import output_names

    return output_names(key)


def _on_disk(sdata) -> set[str]:
    return {path.split("/", 1)[1] for path in sdata.elements_paths_on_disk()}


def _write_into_store(sdata, names: list[str], *, replace: list[str]) -> None:
    """Add the elements ``names`` to the slide's own zarr store, leaving every other element as it is.

    SpatialData does not overwrite an element in its own store; the outputs of an earlier run (``replace``, only
    with ``--overwrite``) are deleted from the store first. If a write fails, what this call wrote is deleted
    again, so the store holds no half-written result.
    """
    if replace:
        sdata.delete_element_from_disk(replace)
    written = []
    try:
        for name in names:
            sdata.write_element(name)
            written.append(name)
    except BaseException:
        for name in written:
            try:
                sdata.delete_element_from_disk(name)
            except Exception:  # noqa: BLE001 (report the write's own error, not this clean-up's)
                logger.warning("Could not remove the partly written element %r from %s.", name, sdata.path)
        raise


def _superresolve(args: argparse.Namespace) -> int:
    import sr_spatial as sr

    start = time.perf_counter()
    if args.quiet:
        sr.settings.verbosity = "warning"
    if args.out is not None:
        if args.out.resolve() == args.slide.resolve():
            msg = "--out is the slide itself; leave --out out to write into the slide's zarr store."
            raise _UserError(msg)
        _check_out(args.out, overwrite=args.overwrite)
    sdata, from_space_ranger = _read_slide(args)
    image_key = _choose_image(sdata, args.image_key)
    key = args.key_added or f"{image_key}_superres"
    names = _output_names(key)
    into_store = args.out is None
    existing = [name for name in names.values() if name in _on_disk(sdata)] if into_store else []
    if existing and not args.overwrite:
        msg = (
            f"{args.slide} already holds {existing} from an earlier run; pass --overwrite to replace them or "
            "--key-added to write under another name."
        )
        raise _UserError(msg)

    kwargs = {
        "image_key": image_key,
        "table_key": args.table_key,
        "shapes_key": args.shapes_key,
        "genes": [g.strip() for g in args.genes.split(",") if g.strip()] if args.genes else None,
        "n_top_genes": args.n_top_genes,
        "scale": args.scale,
        "method": args.method,
        "model": args.model,
        "key_added": key,
        "seed": args.seed,
        "overwrite": args.overwrite,
        "image_store": args.image_store,
        "device": args.device,
    }
    if args.quiet:
        kwargs["show_progress_bar"] = False
    print(f"Super-resolving {image_key!r} of {args.slide} ({args.scale}x) ...", flush=True)
    image_key = kwargs.pop("image_key")
    sr.tl.superresolve(sdata, image_key, **kwargs)

    with warnings.catch_warnings():
        # zarr announces a future default on every array written; it says nothing about this store.
        warnings.filterwarnings("ignore", message="zarr v3 autosharding", category=UserWarning)
        if into_store:
            _write_into_store(sdata, list(names.values()), replace=existing)
            target = args.slide
        else:
            _replace_store(args.out)
            sdata.write(args.out)
            target = args.out
    _summary(sdata, key, target, time.perf_counter() - start, whole_slide=not into_store or from_space_ranger)
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


def _is_zarr(path: Path) -> bool:
    return (path / ".zgroup").exists() or (path / "zarr.json").exists()


def _check_out(path: Path, *, overwrite: bool) -> None:
    """Before any work: --out must be new, or a zarr store that --overwrite may replace."""
    if not path.exists():
        return
    if not overwrite:
        msg = f"{path} exists; pass --overwrite to replace it or choose another --out."
        raise _UserError(msg)
    if not _is_zarr(path):
        msg = f"{path} exists and is not a zarr store, so it is not replaced; choose another --out."
        raise _UserError(msg)


def _replace_store(path: Path) -> None:
    """Remove the zarr store that --overwrite replaces (checked by `_check_out`)."""
    if path.exists():
        shutil.rmtree(path)


# --- demo ----------------------------------------------------------------------------------------------------


def _demo(args: argparse.Namespace) -> int:
    import sr_spatial as sr

    _check_out(args.out, overwrite=args.overwrite)
    start = time.perf_counter()
    print("Generating the demo slide (synthetic Visium, 55 µm spots on a 100 µm hexagonal lattice) ...")
    sdata = sr.datasets.demo(seed=args.seed)
    image = "demo_full_image"
    scores = {}
    for method in ("nearest", "bicubic", "histology", "diffusion"):
        key = f"superres_{method}"
        if method == "histology":
            print("Fitting the histology predictor (morphology features, weights on held-out spots) ...")
        if method == "diffusion":
            print(f"Training the diffusion model ({args.config}) on the slide and sampling ...")
        sr.tl.superresolve(
            sdata,
            image,
            method=method,
            scale=args.scale,
            config=args.config,
            device=args.device,
            seed=args.seed,
            key_added=key,
            show_progress_bar=not args.quiet,
        )
        scores[method] = sr.tl.evaluate(sdata, key, truth_key="demo_truth").mean()
    _replace_store(args.out)
    with warnings.catch_warnings():
        # zarr announces a future default on every array written; it says nothing about this store.
        warnings.filterwarnings("ignore", message="zarr v3 autosharding", category=UserWarning)
        sdata.write(args.out)
    elapsed = time.perf_counter() - start

    table = sdata.tables["superres_diffusion_table"]
    info = table.uns["superres_diffusion"]
    bin_um = info["bin_size_px"] * sdata.tables["table"].uns["demo"]["microns_per_pixel"]
    print()
    print(f"Accuracy against the demo's true {bin_um:.0f} µm expression map (mean over {table.n_vars} genes):")
    print(f"  {'method':<10} {'pearson r':>10} {'SSIM':>8} {'RMSE':>8} {'spot residual':>14}")
    for method, row in scores.items():
        print(
            f"  {method:<10} {row['pearson']:>10.3f} {row['ssim']:>8.3f} {row['rmse']:>8.3f} "
            f"{row['spot_residual']:>14.2e}"
        )
    print()
    print(
        f"Wrote {args.out.resolve()} in {elapsed:.0f} s. It holds the demo slide and, per method M in "
        f"{'/'.join(scores)}:"
    )
    print(
        f"  images['superres_M']        genes x bins expression map ({table.n_vars} channels) over the H&E, "
        "NaN outside the tissue"
    )
    print("  images['superres_M_std']    per-bin standard deviation (the uncertainty), NaN outside the tissue")
    print(f"  shapes['superres_M_bins']   {table.n_obs} square bins in the tissue")
    print("  tables['superres_M_table']  AnnData, one row per bin (X, layers['std'], obsm['spatial'])")
    print("Open it with: import spatialdata as sd; sdata = sd.read_zarr(" + repr(str(args.out)) + ")")
    print("Your own slide: sr-spatial superresolve SLIDE.zarr (see sr-spatial superresolve --help)")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``sr-spatial`` command; returns the exit status (2 for a problem with the input)."""
    args = _parser().parse_args(argv)
    run = {"demo": _demo, "superresolve": _superresolve}[args.command]
    try:
        return run(args)
    except _UserError as error:
        print(f"sr-spatial {args.command}: error: {error}", file=sys.stderr)
        return 2
    except (ValueError, KeyError, TypeError, FileNotFoundError) as error:
        # sr_spatial's own messages say what to do next; a traceback would bury them.
        if logger.isEnabledFor(logging.DEBUG):
            raise
        message = error.args[0] if isinstance(error, KeyError) and error.args else error
        print(f"sr-spatial {args.command}: error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
