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
