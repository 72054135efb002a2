from __future__ import annotations

import numpy as np
import pytest
import spatialdata as sd

import sr_spatial as sr
from sr_spatial._cli import main

SEED = 0
OUTPUTS = ("demo_full_image_superres", "demo_full_image_superres_std")


@pytest.fixture(scope="module")
def small_store(tmp_path_factory):
    """A small demo slide written to zarr once; tests copy it before changing it."""
    path = tmp_path_factory.mktemp("store") / "slide.zarr"
    sr.datasets.demo(seed=SEED, n_rows=12, n_cols=11, n_genes=12).write(path)
    return path


@pytest.fixture
def store(small_store, tmp_path):
    import shutil

    return shutil.copytree(small_store, tmp_path / "slide.zarr")


def test_version(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out.strip() == f"sr-spatial {sr.__version__}"


@pytest.mark.parametrize("argv", [["--help"], ["superresolve", "--help"], ["demo", "--help"]])
def test_help_is_plain_text(argv, capsys):
    with pytest.raises(SystemExit):
        main(argv)
    text = capsys.readouterr().out
    assert "``" not in text and ":func:" not in text
    if argv == ["--help"]:
        assert "superresolve" in text and "demo" in text
    if argv == ["demo", "--help"]:
        # The demo runs (and says it runs) four methods.
        assert all(m in text for m in ("histology", "diffusion", "bicubic", "nearest")) and "four" in text


def test_superresolve_writes_only_the_new_elements_into_the_store(store, capsys):
    before = sd.read_zarr(store)
    counts = before.tables["table"].X.copy()
    assert main(["superresolve", str(store), "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert str(store.resolve()) in printed and "histology" in printed
    after = sd.read_zarr(store)
    # The default image is the full-resolution H&E; the four outputs are added, nothing else changes.
    assert set(after.images) == set(before.images) | set(OUTPUTS)
    assert set(after.shapes) == set(before.shapes) | {"demo_full_image_superres_bins"}
    assert set(after.tables) == set(before.tables) | {"demo_full_image_superres_table"}
    assert (after.tables["table"].X != counts).nnz == 0
    table = after.tables["demo_full_image_superres_table"]
    info = table.uns["demo_full_image_superres"]
    assert info["params"]["method"] == "histology"
    # Per-gene results are labelled by gene in var (and still in uns as arrays, as before).
    np.testing.assert_array_equal(table.var["histology_weight"].to_numpy(), info["histology"]["weight"])
    assert list(table.var_names) == list(info["genes"])
    assert table.var.loc[table.var_names[0], "histology_heldout_r"] == info["histology"]["heldout_r"][0]
    image = after.images["demo_full_image_superres"]
    assert list(image.coords["c"].values) == list(table.var_names)


def test_superresolve_refuses_to_replace_unless_asked(store, capsys):
    assert main(["superresolve", str(store), "--quiet", "--method", "nearest"]) == 0
    capsys.readouterr()
    assert main(["superresolve", str(store), "--quiet"]) == 2
    error = capsys.readouterr().err
    assert "--overwrite" in error and "demo_full_image_superres" in error
    assert main(["superresolve", str(store), "--quiet", "--overwrite", "--genes", "gene_00,gene_03"]) == 0
    # Another key writes alongside.
    argv = ["superresolve", str(store), "--quiet", "--method", "bicubic", "--key-added", "cubic", "--scale", "2"]
    assert main(argv) == 0
    sdata = sd.read_zarr(store)
    table = sdata.tables["demo_full_image_superres_table"]
    assert list(table.var_names) == ["gene_00", "gene_03"]
    assert table.uns["demo_full_image_superres"]["params"]["method"] == "histology"
    assert sdata.tables["cubic_table"].uns["cubic"]["params"]["scale"] == 2


def test_superresolve_explains_bad_input(store, tmp_path, capsys):
    assert main(["superresolve", str(store), "--image-key", "nope"]) == 2
    assert "demo_full_image" in capsys.readouterr().err  # the images there are listed
    assert main(["superresolve", str(tmp_path / "absent.zarr")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["superresolve", str(store), "--quiet", "--genes", "not_a_gene"]) == 2
    assert "not_a_gene" in capsys.readouterr().err
    (tmp_path / "notes").mkdir()
    assert main(["superresolve", str(tmp_path / "notes")]) == 2
    assert "zarr" in capsys.readouterr().err
    assert set(sd.read_zarr(store).images) == {"demo_full_image", "demo_hires_image", "demo_truth"}


def test_superresolve_reads_a_space_ranger_folder(reader_dirs, tmp_path, capsys):
    outs = reader_dirs["visium"]
    # A Space Ranger folder is not written into.
    assert main(["superresolve", str(outs), "--quiet"]) == 2
    assert "--out" in capsys.readouterr().err
    out = tmp_path / "slide1.zarr"
    argv = ["superresolve", str(outs), "--fullres-image", "tissue_image.tif", "--out", str(out), "--quiet"]
    assert main([*argv, "--n-top-genes", "4"]) == 0
    sdata = sd.read_zarr(out)
    assert "tiny_full_image_superres" in sdata.images and "table" in sdata.tables
    assert sdata.tables["tiny_full_image_superres_table"].n_vars == 4
    assert main([*argv, "--n-top-genes", "4"]) == 2  # --out exists


def test_demo_command_writes_the_store_and_reports_it(tmp_path, capsys):
    out = tmp_path / "demo.zarr"
    assert main(["demo", "--out", str(out), "--config", "tiny", "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert str(out.resolve()) in printed
    for method in ("nearest", "bicubic", "histology", "diffusion"):
        assert method in printed
    sdata = sd.read_zarr(out)
    for method in ("nearest", "bicubic", "histology", "diffusion"):
        assert f"superres_{method}" in sdata.images
        assert f"superres_{method}_table" in sdata.tables
    assert "demo_truth" in sdata.images
    # A second run refuses to overwrite without --overwrite.
    assert main(["demo", "--out", str(out), "--config", "tiny", "--quiet"]) == 2


def test_superresolve_takes_a_model_of_either_kind_and_a_configuration(store, tmp_path, capsys):
    """Issue 34: the help says what the command does; a histology model works; --config as in the API."""
    with pytest.raises(SystemExit):
        main(["superresolve", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "histology (default)" in text and "(either kind)" in text and "--config" in text
    model = sr.tl.train(sd.read_zarr(store), "demo_full_image", scale=2, seed=SEED, show_progress_bar=False)
    model.save(tmp_path / "model")
    argv = ["superresolve", str(store), "--quiet", "--model", str(tmp_path / "model"), "--genes", "gene_03,gene_00"]
    assert main(argv) == 0
    table = sd.read_zarr(store).tables["demo_full_image_superres_table"]
    params = table.uns["demo_full_image_superres"]["params"]
    assert params["method"] == "histology" and params["scale"] == 2  # the model's own scale
    assert list(table.var_names) == ["gene_03", "gene_00"]
    capsys.readouterr()
    argv = ["superresolve", str(store), "--quiet", "--key-added", "cfg", "--config", '{"learned_encoder": false}']
    assert main([*argv, "--n-top-genes", "3"]) == 0
    table = sd.read_zarr(store).tables["cfg_table"]
    assert table.n_vars == 3 and table.uns["cfg"]["params"]["learned_encoder"] is False
    assert main(["superresolve", str(store), "--quiet", "--key-added", "bad", "--config", "{oops"]) == 2
    assert "not valid JSON" in capsys.readouterr().err


def _snapshot(path) -> dict[str, str]:
    """Every file under ``path`` and a digest of its bytes: equal snapshots, an unchanged folder."""
    import hashlib

    return {
        str(file.relative_to(path)): hashlib.sha1(file.read_bytes()).hexdigest()
        for file in sorted(path.rglob("*"))
        if file.is_file()
    }


def _cli(*argv, **kwargs):
    """The command as a user runs it: a separate process."""
    import subprocess
    import sys

    command = [sys.executable, "-m", "sr_spatial._cli", *map(str, argv)]
    return subprocess.run(command, capture_output=True, text=True, timeout=300, check=False, **kwargs)


def test_an_output_inside_the_slide_is_refused_from_the_shell(store):
    before = _snapshot(store)
    result = _cli("superresolve", store, "--out", store / "images", "--overwrite", "--method", "nearest")
    assert result.returncode == 2
    assert "--out" in result.stderr and "inside SLIDE" in result.stderr and "Traceback" not in result.stderr
    assert _snapshot(store) == before


@pytest.mark.parametrize(
    "where",
    [
        ["--out", "{slide}/result.zarr"],  # a copy of the slide inside its own store
        ["--out", "{slide}/..", "--overwrite"],  # a folder holding the slide
        ["--out", "{link}/tables/x.zarr"],  # inside the slide through a symbolic link
        ["--out", "{slide}/", "--overwrite"],  # the slide itself, spelt otherwise
        ["--image-store", "{tmp}/r.zarr", "--out", "{tmp}/r.zarr"],  # outputs on one another
        ["--image-store", "{slide}/images/x"],
        ["--image-store", "{tmp}/r.zarr", "--out", "{tmp}/r.zarr/out.zarr"],
        ["--model", "{tmp}", "--out", "{tmp}/out.zarr"],  # the model folder's files would be replaced
        ["--out", "{tmp}/other.zarr/x.zarr"],  # inside another store
        ["--image-store", "{tmp}/other.zarr/images"],
    ],
)
def test_folders_on_one_another_are_refused_before_any_work(where, store, tmp_path, capsys):
    import zarr

    link = tmp_path / "link.zarr"
    link.symlink_to(store)
    zarr.open_group(tmp_path / "other.zarr", mode="w")
    argv = [arg.format(slide=store, link=link, tmp=tmp_path) for arg in where]
    before = _snapshot(tmp_path)
    assert main(["superresolve", str(store), "--method", "nearest", "--quiet", *argv]) == 2
    error = capsys.readouterr().err
    assert where[0] in error and any(words in error for words in ("SLIDE", "--out", "slide itself", "zarr store"))
    assert "Super-resolving" not in capsys.readouterr().out
    assert _snapshot(tmp_path) == before


def test_a_half_written_output_of_an_interrupted_run_is_replaced(store, capsys):
    # What an interrupted write of an older version left: the element's folder with its zarr.json only.
    half = store / "images" / OUTPUTS[0]
    half.mkdir()
    (half / "zarr.json").write_bytes((store / "images" / "demo_hires_image" / "zarr.json").read_bytes())
    assert main(["superresolve", str(store), "--method", "nearest", "--quiet"]) == 0
    assert "half-written" in capsys.readouterr().out
    sdata = sd.read_zarr(store)
    assert set(OUTPUTS) <= set(sdata.images)
    assert sdata.images[OUTPUTS[0]].sizes["c"] == 12


def test_a_killed_replacement_is_recovered_and_rerun(store, capsys):
    import shutil

    from sr_spatial._cli._atomic import PARTIAL

    assert main(["superresolve", str(store), "--method", "nearest", "--quiet"]) == 0
    earlier = _snapshot(store)
    # A run killed (not interrupted) after moving the earlier output aside ...
    aside = store / PARTIAL / "4194303-killed" / "old" / "images"
    aside.mkdir(parents=True)
    (store / "images" / OUTPUTS[0]).rename(aside / OUTPUTS[0])
    # ... and after moving its own new image in (here: a copy of the H&E's pyramid).
    shutil.copytree(store / "images" / "demo_hires_image", store / "images" / OUTPUTS[0])
    assert main(["superresolve", str(store), "--method", "nearest", "--quiet"]) == 2
    assert "--overwrite" in capsys.readouterr().err  # the earlier output is back, and kept without --overwrite
    assert _snapshot(store) == earlier
    assert main(["superresolve", str(store), "--method", "nearest", "--quiet", "--overwrite", "--scale", "2"]) == 0
    sdata = sd.read_zarr(store)
    assert sdata.tables[f"{OUTPUTS[0]}_table"].uns[OUTPUTS[0]]["params"]["scale"] == 2


def test_a_failed_move_leaves_the_store_as_it_was(store):
    from sr_spatial._cli._atomic import add_elements

    sdata = sd.read_zarr(store)
    sdata.images["copy"] = sdata.images["demo_hires_image"]
    before = _snapshot(store)
    # The element to replace is not there: the move fails after the new element was staged.
    with pytest.raises(FileNotFoundError):
        add_elements(sdata, store, [("images", "copy")], replace=[("images", "absent")])
    assert _snapshot(store) == before


def test_ctrl_c_prints_one_line_and_leaves_the_slide(small_store, tmp_path):
    import shutil
    import signal
    import subprocess
    import sys
    import time

    from sr_spatial._cli._atomic import PARTIAL

    for attempt in range(3):  # the write takes a moment only: signalled late, a run may finish first
        store = shutil.copytree(small_store, tmp_path / f"slide{attempt}.zarr")
        before = _snapshot(store)
        command = [sys.executable, "-m", "sr_spatial._cli", "superresolve", str(store), "--method", "nearest"]
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        while process.poll() is None and not (store / PARTIAL).exists():
            time.sleep(0.002)
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=120)
        if process.returncode != 0:
            break
    assert process.returncode == 130
    assert err.strip().splitlines()[-1] == "sr-spatial superresolve: interrupted; no file was changed."
    assert "Traceback" not in err
    assert _snapshot(store) == before


def test_a_zarr_that_is_not_a_spatialdata_is_named_so(tmp_path, capsys):
    import zarr

    zarr.open_group(tmp_path / "plain.zarr", mode="w")
    assert main(["superresolve", str(tmp_path / "plain.zarr"), "--quiet"]) == 2
    assert "not a SpatialData" in capsys.readouterr().err


def test_refusals_name_the_commands_flags(store, tmp_path, capsys):
    from spatialdata.transformations import Identity, Translation, set_transformation

    sdata = sd.read_zarr(store)
    # Image and spots also share a second coordinate system that puts the spots 300 px to the right.
    set_transformation(sdata.images["demo_full_image"], Identity(), "aligned", write_to_sdata=sdata)
    shift = Translation([300.0, 0.0], axes=("x", "y"))
    set_transformation(sdata.shapes["demo"], shift, "aligned", write_to_sdata=sdata)
    argv = ["superresolve", str(store), "--method", "nearest", "--quiet"]
    assert main(argv) == 2
    error = capsys.readouterr().err
    assert "300 px apart" in error and "`--coordinate-system`" in error and "coordinate_system" not in error
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("the user's")
    assert main([*argv, "--image-store", str(mine)]) == 2
    error = capsys.readouterr().err
    assert "`--image-store`" in error and "image_store" not in error
    assert main([*argv, "--coordinate-system", "demo"]) == 0
    assert "demo_full_image_superres" in sd.read_zarr(store).images
