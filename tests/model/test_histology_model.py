"""HistologyModel: fitted complete, saved and loaded exactly, applied through superresolve(model=...)."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
from conftest import IMAGE_KEY, SEED

import sr_spatial as sr
from sr_spatial.histology._method import model_for_genes
from sr_spatial.model import HistologyConfig, HistologyModel

SCALE = 4


def _maps(sdata, key):
    table = sdata.tables[f"{key}_table"]
    return np.asarray(table.X), np.asarray(table.layers["std"]), np.asarray(sdata.images[key].values)


@pytest.fixture(scope="module")
def default_run(demo_sdata):
    """The default call, which fits the histology predictor inside."""
    sdata = copy.deepcopy(demo_sdata)
    sr.tl.superresolve(sdata, IMAGE_KEY, scale=SCALE, key_added="own", seed=SEED, show_progress_bar=False)
    return sdata


@pytest.fixture(scope="module")
def fitted(demo_sdata):
    return sr.tl.train(demo_sdata, IMAGE_KEY, method="histology", scale=SCALE, seed=SEED, show_progress_bar=False)


def test_train_fits_a_complete_model(fitted, demo_sdata):
    assert isinstance(fitted, HistologyModel)
    assert fitted.genes == sr.pp.build_st_map(demo_sdata, IMAGE_KEY, scale=SCALE).genes
    predictor = fitted.predictor
    for name in ("weight", "interpolation_weight", "learned_weight", "coverage_scale", "typical_sd", "heldout_r"):
        assert getattr(predictor, name).shape == (len(fitted.genes),), name
    assert np.all(predictor.coverage_scale > 0) and np.all(predictor.typical_sd >= 0.05)
    assert (predictor.weight > 0.05).any()  # the demo's H&E predicts some genes' detail
    with pytest.raises(AttributeError):  # frozen: nothing is patched after the fit
        predictor.weight = np.zeros_like(predictor.weight)
    text = repr(fitted)
    assert f"{len(fitted.genes)} genes" in text and "scale=4" in text and "Morphology" in text


def test_saved_loaded_and_applied_gives_the_default_call_bit_for_bit(fitted, default_run, demo_sdata, tmp_path):
    fitted.save(tmp_path / "histology")
    loaded = sr.model.load(tmp_path / "histology")
    assert isinstance(loaded, HistologyModel) and loaded.genes == fitted.genes
    sdata = copy.deepcopy(demo_sdata)
    sr.tl.superresolve(sdata, IMAGE_KEY, scale=SCALE, model=loaded, key_added="loaded", show_progress_bar=False)
    for own, applied in zip(_maps(default_run, "own"), _maps(sdata, "loaded"), strict=True):
        np.testing.assert_array_equal(own, applied)
    uns = sdata.tables["loaded_table"].uns["loaded"]
    assert uns["params"]["method"] == "histology"
    own_record = default_run.tables["own_table"].uns["own"]["histology"]
    np.testing.assert_array_equal(uns["histology"]["weight"], own_record["weight"])
    # A path works too, and a subset of the model's genes keeps their maps.
    genes = fitted.genes[3:6][::-1]
    out = sr.tl.superresolve(
        demo_sdata, IMAGE_KEY, scale=SCALE, model=tmp_path / "histology", genes=genes, inplace=False,
        show_progress_bar=False,
    )  # fmt: skip
    table = out.tables[f"{IMAGE_KEY}_superres_table"]
    assert list(table.var_names) == genes
    idx = [fitted.genes.index(g) for g in genes]
    np.testing.assert_array_equal(np.asarray(table.X), _maps(default_run, "own")[0][:, idx])
    weights = table.uns[f"{IMAGE_KEY}_superres"]["histology"]["weight"]
    np.testing.assert_array_equal(weights, own_record["weight"][idx])


def test_a_model_with_learned_encoders_round_trips_exactly(demo_sdata, tmp_path):
    model = sr.tl.train(
        demo_sdata, IMAGE_KEY, method="histology", scale=SCALE, config=HistologyConfig(learned_encoder=True),
        train_steps=10, seed=SEED, show_progress_bar=False,
    )  # fmt: skip
    assert model.learned is not None and len(model.learned.encoders) == 2
    model.save(tmp_path / "learned")
    loaded = HistologyModel.load(tmp_path / "learned", genes=model.genes)
    outs = [
        sr.tl.superresolve(
            demo_sdata, IMAGE_KEY, scale=SCALE, model=m, key_added="x", inplace=False, show_progress_bar=False
        ).tables["x_table"]
        for m in (model, loaded)
    ]
    np.testing.assert_array_equal(outs[0].X, outs[1].X)
    np.testing.assert_array_equal(outs[0].layers["std"], outs[1].layers["std"])
    assert "learned_weight" in outs[1].uns["x"]["histology"]


def test_load_checks_genes_files_and_versions(fitted, tmp_path):
    path = fitted.save(tmp_path / "m")
    with pytest.raises(ValueError, match="differ"):
        HistologyModel.load(path, genes=fitted.genes[:-1])
    meta = json.loads((path / "config.json").read_text())
    meta["genes"] = meta["genes"][::-1]
    (path / "config.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="checksum"):
        HistologyModel.load(path)
    meta["genes"] = meta["genes"][::-1]
    meta["format_version"] = 99
    (path / "config.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="newer format"):
        HistologyModel.load(path)
    with pytest.raises(FileNotFoundError, match="not a saved histology model"):
        HistologyModel.load(tmp_path)


def test_save_never_replaces_files_it_did_not_write(fitted, tmp_path):
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "config.json").write_text('{"my": "settings"}')
    for overwrite in (False, True):
        with pytest.raises(FileExistsError, match="sr_spatial did not write"):
            fitted.save(folder, overwrite=overwrite)
    assert json.loads((folder / "config.json").read_text()) == {"my": "settings"}
    fitted.save(tmp_path / "ours")
    fitted.save(tmp_path / "ours", overwrite=True)  # its own files may be replaced when asked


def test_a_model_is_used_only_by_its_method(fitted, tiny_model, demo_sdata):
    for model, method in ((fitted, "diffusion"), (fitted, "nearest"), (tiny_model, "histology")):
        with pytest.raises(ValueError, match="cannot use"):
            sr.tl.superresolve(demo_sdata, IMAGE_KEY, model=model, method=method, inplace=False)
    with pytest.raises(ValueError, match="a fitted model"):
        sr.tl.superresolve(demo_sdata, IMAGE_KEY, model=fitted, features="morphology", inplace=False)
    with pytest.raises(ValueError, match="no model to train"):
        sr.tl.train(demo_sdata, IMAGE_KEY, method="bicubic")


def test_train_fits_the_histology_model_by_default(fitted, demo_sdata):
    """Issue 34: one default method everywhere: `tl.train` fits what `superresolve` fits."""
    default = sr.tl.train(demo_sdata, IMAGE_KEY, scale=SCALE, seed=SEED, show_progress_bar=False)
    assert isinstance(default, HistologyModel) and default.genes == fitted.genes
    np.testing.assert_array_equal(default.predictor.weight, fitted.predictor.weight)


def test_only_the_genes_asked_for_are_computed(fitted, demo_sdata, caplog):
    genes = fitted.genes[:2]
    part = model_for_genes(fitted, genes)
    assert part.genes == genes and part.predictor.spread.shape == (2, 5)
    assert part.predictor.ridge.coef.shape[1] == 2
    with caplog.at_level("INFO", logger="sr_spatial"):
        out = sr.tl.superresolve(
            demo_sdata, IMAGE_KEY, model=fitted, genes=genes, inplace=False, show_progress_bar=False
        )
    assert "x 2 genes" in caplog.text  # the slide is read for the two genes only
    assert list(out.tables[f"{IMAGE_KEY}_superres_table"].var_names) == genes
    with pytest.raises(ValueError, match="some of the model's genes"):
        model_for_genes(fitted, ["NOT_A_GENE"])


def test_the_models_scale_is_the_default_and_another_is_refused(demo_sdata):
    model = sr.tl.train(demo_sdata, IMAGE_KEY, scale=2, seed=SEED, show_progress_bar=False)
    out = sr.tl.superresolve(demo_sdata, IMAGE_KEY, model=model, inplace=False, show_progress_bar=False)
    assert out.tables[f"{IMAGE_KEY}_superres_table"].uns[f"{IMAGE_KEY}_superres"]["params"]["scale"] == 2
    before = set(demo_sdata.images)
    with pytest.raises(ValueError, match="trained for scale 2 and `scale=4`"):
        sr.tl.superresolve(demo_sdata, IMAGE_KEY, model=model, scale=4, show_progress_bar=False)
    assert set(demo_sdata.images) == before  # refused before anything was written


def test_a_slide_lacking_some_of_the_models_genes(fitted, tiny_model, demo_sdata, caplog):
    """The shared genes are used (and said) for a histology model; asked-for missing genes are refused up front."""
    sdata = copy.deepcopy(demo_sdata)
    table = sdata.tables["table"]
    lacking = fitted.genes[:2]
    sdata.tables["table"] = table[:, ~table.var_names.isin(lacking)].copy()
    with caplog.at_level("WARNING", logger="sr_spatial"):
        out = sr.tl.superresolve(sdata, IMAGE_KEY, model=fitted, inplace=False, show_progress_bar=False)
    assert "2 of the model's" in caplog.text and lacking[0] in caplog.text
    written = list(out.tables[f"{IMAGE_KEY}_superres_table"].var_names)
    assert written == [g for g in fitted.genes if g not in lacking]
    with pytest.raises(KeyError, match="not in table 'table'"):
        sr.tl.superresolve(sdata, IMAGE_KEY, model=fitted, genes=lacking, inplace=False)
    if set(lacking) & set(tiny_model.genes):
        with pytest.raises(KeyError, match="reads all its genes together"):
            sr.tl.superresolve(sdata, IMAGE_KEY, model=tiny_model, inplace=False)


def test_an_edited_setting_or_array_is_refused_and_an_older_save_loads(fitted, tmp_path):
    import numpy as np

    path = fitted.save(tmp_path / "m")
    meta = json.loads((path / "config.json").read_text())
    edited = {**meta, "scale": meta["scale"] * 2}
    (path / "config.json").write_text(json.dumps(edited))
    with pytest.raises(ValueError, match=r"config\.json changed after saving \(fields \['scale'\]\)"):
        HistologyModel.load(path)
    edited = {**meta, "config": {**meta["config"], "encoder_width": 99}}
    (path / "config.json").write_text(json.dumps(edited))
    with pytest.raises(ValueError, match=r"fields \['config'\]"):
        HistologyModel.load(path)
    (path / "config.json").write_text(json.dumps(meta))
    with np.load(path / "histology.npz") as stored:
        arrays = {name: stored[name] for name in stored.files}
    np.savez(path / "histology.npz", **{**arrays, "weight": arrays["weight"] * 0})
    with pytest.raises(ValueError, match=r"histology\.npz changed after saving"):
        HistologyModel.load(path)
    # A model saved before the checksums (no "checksums" field) loads as it did.
    np.savez(path / "histology.npz", **arrays)
    (path / "config.json").write_text(json.dumps({k: v for k, v in meta.items() if k != "checksums"}))
    loaded = HistologyModel.load(path)
    np.testing.assert_array_equal(loaded.predictor.weight, fitted.predictor.weight)
