"""Training on reference slides with finer truth and applying the model to a target (issue 25)."""

from __future__ import annotations

import copy

import numpy as np
import pytest
from conftest import IMAGE_KEY, SEED

import sr_spatial as sr
from sr_spatial.core._reference import PseudoSpots, pool_groups, target_geometry
from sr_spatial.histology._reference import MIN_SPREAD_FACTOR, guard
from sr_spatial.model import HistologyModel
from sr_spatial.tl._options import SlideKeys

SCALE = 2
#: The demo's spot pitch is 100 µm: at scale 2 the output's bins, and the references' spots, are 50 µm apart.
UNIT_UM = 50.0


@pytest.fixture(scope="module")
def reference():
    """Another demo slide (seed 1) measured by 50 µm spots on a 50 µm square lattice: spots at the output's scale."""
    other = sr.datasets.demo(seed=1)
    return sr.datasets.measure_demo_truth(other, bin_um=UNIT_UM, seed=1, footprint="disk"), other


@pytest.fixture(scope="module")
def genes(demo_sdata):
    return list(sr.pp.build_st_map(demo_sdata, IMAGE_KEY, scale=SCALE, n_top_genes=12).genes)


@pytest.fixture(scope="module")
def histology_model(reference, demo_sdata, genes):
    ref, _ = reference
    return sr.tl.train(
        [ref], image_key=["he"], reference=True, target=demo_sdata, scale=SCALE, genes=genes, seed=SEED,
        method="histology", show_progress_bar=False,
    )  # fmt: skip


def test_the_target_geometry_is_read_off_its_shapes(demo_sdata, reference):
    geometry = target_geometry(demo_sdata, SlideKeys())
    assert geometry.lattice == "hexagonal"
    assert geometry.radius_ratio == pytest.approx(0.275, rel=0.05)  # Visium: 55 µm disks 100 µm apart
    ref, _ = reference
    square = target_geometry(ref, SlideKeys())
    assert square.lattice == "square" and square.radius_ratio == pytest.approx(0.5, rel=0.05)


def test_units_are_pooled_into_the_targets_pseudo_spots():
    # A square lattice of units, pseudo-spots 2 units apart whose disks just enclose a 2 x 2 block (her2st).
    ys, xs = np.mgrid[0:20, 0:20]
    centres = np.column_stack([xs.ravel(), ys.ravel()]).astype(float) * 10
    groupings = pool_groups(centres, pitch=10.0, scale=2, geometry=PseudoSpots("square", 0.48), n_offsets=3, seed=0)
    assert len(groupings) == 3
    first = groupings[0]
    sizes = np.bincount(first[first >= 0])
    assert np.median(sizes) == 4 and sizes.max() == 4  # centred between units: every interior disk holds 2 x 2
    assert all(((g >= -1) & (g < len(centres))).all() for g in groupings)

    # Jittered units (legacy ST's detected spots), one of them far off to the lower left: the first pooling still
    # follows the lattice every unit votes for, so its disks hold 2 x 2 blocks.
    rng = np.random.default_rng(0)
    jittered = centres + rng.normal(scale=0.8, size=centres.shape)
    jittered[0] -= 9.0
    first = pool_groups(jittered, pitch=10.0, scale=2, geometry=PseudoSpots("square", 0.6), n_offsets=1, seed=0)[0]
    inside = first[first >= 0]
    # 0.9: only a tiling's edge leaves pairs; placed by the outermost unit alone, 0.81 of the units were in blocks.
    assert (np.bincount(inside)[inside] == 4).mean() >= 0.9


def test_a_small_slides_lattice_is_read_off_its_inner_spots():
    few = sr.datasets.demo(seed=0, n_rows=5, n_cols=5)  # 16 of its 25 spots lie at the edge
    assert target_geometry(few, SlideKeys()).lattice == "hexagonal"


def test_spots_small_for_their_pitch_pool_their_lattice_cells():
    # Visium-sized disks (0.275 pitches) on a square lattice 2 units apart hold at most one unit's centre: nothing
    # would vary inside a pseudo-spot. (A hexagonal lattice's first offset puts pseudo-spots between two units.)
    ys, xs = np.mgrid[0:30, 0:30]
    centres = np.column_stack([xs.ravel(), ys.ravel()]).astype(float) * 10
    groupings = pool_groups(centres, pitch=10.0, scale=2, geometry=PseudoSpots("square", 0.275), n_offsets=2, seed=0)
    for group in groupings:
        sizes = np.bincount(group[group >= 0])
        assert np.median(sizes) >= 3  # the cell of a pseudo-spot two units apart holds about four
        assert (group >= 0).mean() > 0.9  # and the cells cover the units


def test_a_histology_model_trained_on_a_reference_applies_exactly_to_the_target(
    histology_model, demo_sdata, genes, tmp_path
):
    model = histology_model
    assert isinstance(model, HistologyModel) and model.genes == genes
    assert model.reference["n_references"] == 1 and "reference slides" in repr(model)
    # Fitted at the output's own level: nothing to carry to finer bins.
    assert model.predictor.finer_ratio == 1.0
    sdata = copy.deepcopy(demo_sdata)
    sr.tl.superresolve(sdata, IMAGE_KEY, scale=SCALE, model=model, genes=genes, seed=SEED, key_added="sr")
    uns = sdata.tables["sr_table"].uns["sr"]
    assert uns["spot_residual"] < 1e-6  # still exactly consistent with the target's own spots
    record = uns["histology"]
    for name in ("guard_factor", "guard_slope", "reference_weight"):
        assert np.asarray(record[name]).shape == (len(genes),)
    factor = np.asarray(record["guard_factor"])
    assert np.all((factor >= 0) & (factor <= 1))
    np.testing.assert_allclose(record["weight"], record["reference_weight"] * record["detail_cap"] * factor, rtol=1e-5)
    # Saved and loaded, it is the same model on the target.
    loaded = sr.model.load(model.save(tmp_path / "ref"))
    assert loaded.reference == model.reference
    again = sr.tl.superresolve(
        demo_sdata, IMAGE_KEY, scale=SCALE, model=loaded, genes=genes, seed=SEED, key_added="sr", inplace=False
    )
    np.testing.assert_array_equal(again.tables["sr_table"].X, sdata.tables["sr_table"].X)


def test_learned_encoders_train_on_references_and_travel_with_the_model(reference, demo_sdata, genes, tmp_path):
    ref, _ = reference
    bins = sr.datasets.measure_demo_truth(reference[1], bin_um=UNIT_UM, seed=2, footprint="square")
    config = {"learned_encoder": True, "encoder_steps": 20, "encoder_width": 8}
    model = sr.tl.train(
        [ref, bins], image_key="he", reference=True, target=demo_sdata, scale=SCALE, genes=genes, seed=SEED,
        method="histology", config=config, show_progress_bar=False,
    )  # fmt: skip
    # One encoder per reference, each trained on the other; no slide's statistics kept: each uses its own.
    assert model.uses_learned_encoder and len(model.learned.encoders) == 2
    assert model.learned.input_mean is None
    n_units = ref.tables["table"].n_obs + bins.tables["t"].n_obs
    assert model.learned.heldout.shape == (n_units, len(genes)) and np.isfinite(model.learned.heldout).all()
    out = sr.tl.superresolve(
        demo_sdata, IMAGE_KEY, scale=SCALE, model=model, seed=SEED, key_added="sr", inplace=False,
        show_progress_bar=False,
    )  # fmt: skip
    record = out.tables["sr_table"].uns["sr"]["histology"]
    assert np.asarray(record["learned_weight"]).shape == (len(genes),)
    assert out.tables["sr_table"].uns["sr"]["spot_residual"] < 1e-6
    loaded = sr.model.load(model.save(tmp_path / "learned"))
    assert loaded.learned.input_mean is None and len(loaded.learned.encoders) == 2
    again = sr.tl.superresolve(
        demo_sdata, IMAGE_KEY, scale=SCALE, model=loaded, seed=SEED, key_added="sr", inplace=False,
        show_progress_bar=False,
    )  # fmt: skip
    np.testing.assert_array_equal(again.tables["sr_table"].X, out.tables["sr_table"].X)


def test_the_reference_beats_the_measurement_on_the_demo(histology_model, demo_sdata, genes):
    """The demo's expression follows its H&E; a reference of the same kind carries that into its detail."""
    sdata = copy.deepcopy(demo_sdata)
    scores = {}
    for name, model in (("nearest", None), ("reference", histology_model)):
        sr.tl.superresolve(
            sdata, IMAGE_KEY, scale=SCALE, model=model, method="nearest" if model is None else None, genes=genes,
            seed=SEED, key_added=name, show_progress_bar=False,
        )  # fmt: skip
        scores[name] = sr.tl.evaluate(sdata, name, truth_key="demo_truth")["pearson"].mean()
    assert scores["reference"] > scores["nearest"]


def test_the_guard_keeps_detail_the_target_confirms_and_drops_detail_it_contradicts(histology_model, demo_sdata):
    st_map = sr.pp.build_st_map(demo_sdata, IMAGE_KEY, scale=SCALE, genes=histology_model.genes)
    rng = np.random.default_rng(0)
    features = rng.normal(size=(len(st_map.values), histology_model.predictor.ridge.coef.shape[0]))
    predicted = histology_model.predictor.ridge.predict(features)
    args = {"pitch": st_map.pitch, "scale": SCALE}
    agree = guard(histology_model.predictor, features, predicted, st_map.centres, **args)
    contradict = guard(histology_model.predictor, features, -predicted, st_map.centres, **args)
    helped = histology_model.predictor.weight > 0.2
    assert helped.any()
    assert np.all(agree["factor"][helped] > contradict["factor"][helped])
    assert np.median(contradict["factor"][helped]) < 0.5


def test_the_spread_follows_how_the_targets_own_spots_scatter(histology_model, demo_sdata):
    st_map = sr.pp.build_st_map(demo_sdata, IMAGE_KEY, scale=SCALE, genes=histology_model.genes)
    rng = np.random.default_rng(0)
    predictor = histology_model.predictor
    features = rng.normal(size=(len(st_map.values), predictor.ridge.coef.shape[0]))
    args = {"pitch": st_map.pitch, "scale": SCALE}
    # Spots that barely differ from their neighbours: the references' spread is narrowed, as far as allowed.
    still = 2.0 + rng.normal(scale=1e-3, size=st_map.values.shape)
    narrow = guard(predictor, features, still, st_map.centres, **args)["spread_factor"]
    np.testing.assert_allclose(narrow, MIN_SPREAD_FACTOR)
    # Spots far noisier than the references': widened, one factor for the slide.
    noisy = np.clip(st_map.values + rng.normal(scale=2.0, size=st_map.values.shape), 0, None)
    wide = guard(predictor, features, noisy, st_map.centres, **args)["spread_factor"]
    assert np.all(wide > 1.5) and np.ptp(wide) == 0


def _swapped_genes(ref, genes):
    """The reference with the counts of ``genes`` in reverse order: another biology on the same kind of H&E."""
    from scipy import sparse

    swapped = copy.deepcopy(ref)
    table = swapped.tables["table"]
    columns = table.var_names.get_indexer(genes)
    counts = sparse.csr_matrix(table.X).toarray()
    counts[:, columns] = counts[:, columns[::-1]]
    table.X = sparse.csr_matrix(counts)
    return swapped


def _shuffled_units(ref):
    """The reference with its units' counts shuffled among them: expression unrelated to the H&E."""
    shuffled = copy.deepcopy(ref)
    table = shuffled.tables["table"]
    table.X = table.X[np.random.default_rng(0).permutation(table.n_obs)]
    return shuffled


@pytest.mark.parametrize("kind", ["swapped genes", "shuffled units"])
def test_an_unrelated_reference_does_no_worse_than_the_measurement(reference, demo_sdata, genes, histology_model, kind):
    ref, _ = reference
    unrelated = _swapped_genes(ref, genes) if kind == "swapped genes" else _shuffled_units(ref)
    model = sr.tl.train(
        [unrelated], image_key="he", reference=True, target=demo_sdata, scale=SCALE, genes=genes, seed=SEED,
        method="histology", show_progress_bar=False,
    )  # fmt: skip
    sdata = copy.deepcopy(demo_sdata)
    for name, m in (("nearest", None), ("unrelated", model), ("related", histology_model)):
        sr.tl.superresolve(
            sdata, IMAGE_KEY, scale=SCALE, model=m, method="nearest" if m is None else None, genes=genes, seed=SEED,
            key_added=name, show_progress_bar=False,
        )  # fmt: skip
    score = {name: sr.tl.evaluate(sdata, name, truth_key="demo_truth")["pearson"] for name in ("nearest", "unrelated")}
    assert score["unrelated"].mean() >= score["nearest"].mean() - 1e-3
    record = sdata.tables["unrelated_table"].uns["unrelated"]["histology"]
    if kind == "shuffled units":
        # Nothing to learn: the map the slide gets adds (almost) no histology detail. The held-out weights, fitted
        # on folds of pseudo-spots, keep some noise (at most 0.09 here); the cap and guard bring what is applied
        # under 0.05 for every gene.
        assert np.median(record["reference_weight"]) < 0.05
        assert np.all(np.asarray(record["weight"]) < 0.05)
    else:
        # The target's spots contradict most genes' borrowed detail: the guard shrinks them far more than it does
        # the related reference's.
        related = sdata.tables["related_table"].uns["related"]["histology"]
        assert np.median(record["guard_factor"]) < 0.5 < np.median(related["guard_factor"])


def _renamed_table(sdata, name):
    """The slide with its only table under another name (as other readers name them)."""
    renamed = copy.deepcopy(sdata)
    renamed.tables[name] = renamed.tables.pop("table")
    return renamed


def test_each_slides_only_table_is_read_whatever_its_name(reference, demo_sdata, genes):
    ref, _ = reference
    # Square bins name their table "t", disks "table": references passed together need no `table_key=`.
    bins = sr.datasets.measure_demo_truth(reference[1], bin_um=UNIT_UM, seed=2, footprint="square")
    assert list(bins.tables.keys()) == ["t"] and list(ref.tables.keys()) == ["table"]
    target = _renamed_table(demo_sdata, "counts")
    model = sr.tl.train(
        [ref, bins], image_key="he", reference=True, target=target, scale=SCALE, genes=genes, seed=SEED,
        method="histology", show_progress_bar=False,
    )  # fmt: skip
    assert model.reference["n_references"] == 2
    out = sr.tl.superresolve(
        target, IMAGE_KEY, scale=SCALE, model=model, seed=SEED, key_added="sr", inplace=False, show_progress_bar=False
    )
    assert out.tables["sr_table"].uns["sr"]["params"]["table_key"] == "counts"
    # Two tables, neither the default: which one holds the spots is the user's to say.
    both = _renamed_table(demo_sdata, "counts")
    both.tables["other"] = both.tables["counts"].copy()
    with pytest.raises(KeyError, match=r"Table 'table' not found\. Available tables: \['counts', 'other'\]"):
        sr.tl.superresolve(both, IMAGE_KEY, scale=SCALE, method="nearest", inplace=False)


def test_every_slide_is_read_at_the_coarsest_resolution_among_them(reference, genes, caplog):
    """A reference scanned finely beside a coarse target: both are read at the target's pixels per bin."""
    ref, _ = reference  # 1 µm per pixel: 50 µm units give 50 pixels, read at the cap of 32
    coarse = sr.datasets.demo(seed=0, microns_per_pixel=4.0)  # 50 µm output bins of 12.5 pixels, read at 8
    model = sr.tl.train(
        [ref], image_key="he", reference=True, target=coarse, scale=SCALE, genes=genes, seed=SEED,
        method="histology", show_progress_bar=False,
    )  # fmt: skip
    assert model.reference["px_per_bin"] == 8
    fine = sr.tl.train(
        [ref], image_key="he", reference=True, target=reference[1], target_image_key=IMAGE_KEY, scale=SCALE,
        genes=genes, seed=SEED, method="histology", show_progress_bar=False,
    )  # fmt: skip
    assert fine.reference["px_per_bin"] == 32
    # Applied to a slide coarser than its references were read at, the model says so.
    with caplog.at_level("WARNING", logger="sr_spatial"):
        sr.tl.superresolve(
            coarse, IMAGE_KEY, scale=SCALE, model=fine, seed=SEED, key_added="sr", inplace=False,
            show_progress_bar=False,
        )  # fmt: skip
    assert "coarser than the references were read at (32)" in caplog.text
    with pytest.raises(KeyError, match="must name an image of `target`"):
        sr.tl.train(
            [ref], image_key="he", reference=True, target=coarse, target_image_key="he", genes=genes, method="diffusion"
        )


def test_a_gene_missing_from_a_reference_is_reported(reference, demo_sdata, genes):
    ref, _ = reference
    with pytest.raises(KeyError, match="reference 0 lacks"):
        sr.tl.train(
            [ref], image_key="he", reference=True, target=demo_sdata, genes=[*genes, "NOT_A_GENE"], method="diffusion"
        )
    with pytest.raises(ValueError, match="reference=True"):
        sr.tl.train([ref, ref], image_key="he", genes=genes, method="diffusion")
    with pytest.raises(ValueError, match="one per slide"):
        sr.tl.train([ref, ref], image_key=["he"], reference=True, genes=genes, method="diffusion")


def test_the_diffusion_model_trains_on_references_with_the_targets_geometry(reference, demo_sdata, genes, tmp_path):
    ref, _ = reference
    model = sr.tl.train(
        [ref, ref], image_key="he", reference=True, target=demo_sdata, scale=SCALE, genes=genes, seed=SEED,
        method="diffusion", config="tiny", train_steps=20, show_progress_bar=False,
    )  # fmt: skip
    assert isinstance(model, sr.model.DiffST) and model.genes == genes and model.is_trained
    assert float(model.network.spread_error_ratio.abs().max()) == 0.0 and model.trained_on_references
    assert sr.model.load(model.save(tmp_path / "diffusion")).trained_on_references  # its guard goes with it
    out = sr.tl.superresolve(
        demo_sdata, IMAGE_KEY, scale=SCALE, model=model, n_samples=2, seed=SEED, key_added="d", inplace=False,
        show_progress_bar=False,
    )  # fmt: skip
    uns = out.tables["d_table"].uns["d"]
    assert uns["spot_residual"] < 1e-6
    factor = np.asarray(uns["guard"]["factor"])  # checked on the target's own spots
    assert factor.shape == (len(genes),) and np.all((factor >= 0) & (factor <= 1))
    # The same spots check the spread: one factor for the slide, never narrowing (see _target_spread_factor).
    spread = np.asarray(uns["guard"]["spread_factor"])
    assert spread.shape == (len(genes),) and np.all(spread >= 1) and np.ptp(spread) == 0


def test_superresolve_trains_on_references_and_applies_in_one_call(reference, demo_sdata, genes, histology_model):
    ref, _ = reference
    out = sr.tl.superresolve(
        demo_sdata, IMAGE_KEY, scale=SCALE, genes=genes, seed=SEED, reference=[ref], reference_image_key="he",
        key_added="one", inplace=False, show_progress_bar=False,
    )  # fmt: skip
    two_steps = sr.tl.superresolve(
        demo_sdata, IMAGE_KEY, scale=SCALE, genes=genes, seed=SEED, model=histology_model, key_added="one",
        inplace=False, show_progress_bar=False,
    )  # fmt: skip
    np.testing.assert_array_equal(out.tables["one_table"].X, two_steps.tables["one_table"].X)
    with pytest.raises(ValueError, match="either `model=` or `reference=`"):
        sr.tl.superresolve(demo_sdata, IMAGE_KEY, model=histology_model, reference=[ref], inplace=False)


@pytest.fixture
def computed_features(monkeypatch):
    """The image key of each slide whose features a call of :func:`sr_spatial.features.bin_features` computed.

    Counts the real computation, the extractor's per-tile features, attributed to the call reading them; the
    wrappers delegate to the real functions. A call answered from the cache computes none. The cache starts empty.
    """
    import sr_spatial.features
    from sr_spatial.features import _extract

    calls = []
    read_slide = sr_spatial.features.bin_features

    def bin_features(spots, *args, **kwargs):
        calls.append({"slide": spots.image_key, "tiles": 0})
        return read_slide(spots, *args, **kwargs)

    def counted(method):
        def per_tile(self, *args, **kwargs):
            calls[-1]["tiles"] += 1
            return method(self, *args, **kwargs)

        return per_tile

    monkeypatch.setattr(sr_spatial.features, "bin_features", bin_features)
    for cls in (sr.features.MorphologyFeatures, sr.features.NucleiFeatures):
        for name in ("bin_features", "point_features"):
            if name in vars(cls):
                monkeypatch.setattr(cls, name, counted(vars(cls)[name]))
    monkeypatch.setattr(_extract, "_cache", type(_extract._cache)())

    def computed():
        slides = [call["slide"] for call in calls if call["tiles"]]
        calls.clear()
        return slides

    return computed


def test_the_targets_features_are_computed_once_whether_trained_in_one_call_or_two(computed_features):
    from sr_spatial.features import _extract

    # Small slides: what is counted does not depend on their size.
    target = sr.datasets.demo(seed=SEED, n_rows=6, n_cols=6, n_genes=8)
    ref = sr.datasets.measure_demo_truth(
        sr.datasets.demo(seed=1, n_rows=6, n_cols=6, n_genes=8), bin_um=UNIT_UM, seed=1, footprint="disk"
    )
    genes = list(target.tables["table"].var_names[:4])
    call = {"scale": SCALE, "genes": genes, "seed": SEED, "show_progress_bar": False}
    # Training reads only the target's grid (the resolution to read every slide at); applying computes its features.
    model = sr.tl.train(ref, "he", reference=True, target=target, method="histology", **call)
    sr.tl.superresolve(target, IMAGE_KEY, model=model, key_added="two", inplace=False, **call)
    assert computed_features() == ["he", IMAGE_KEY]
    _extract._cache.clear()
    sr.tl.superresolve(
        target, IMAGE_KEY, reference=[ref], reference_image_key="he", key_added="one", inplace=False, **call
    )
    assert computed_features() == ["he", IMAGE_KEY]


def test_references_without_genes_take_n_top_genes_ranked_on_the_target(reference, demo_sdata):
    """Issue 34: `n_top_genes` is honoured on references, chosen as `select_genes` chooses on the target."""
    ref, _ = reference
    model = sr.tl.train(
        [ref], image_key="he", reference=True, target=demo_sdata, scale=SCALE, n_top_genes=6, seed=SEED,
        show_progress_bar=False,
    )  # fmt: skip
    assert isinstance(model, HistologyModel)  # the default method, as superresolve's
    target = demo_sdata.tables["table"]
    shared = set(ref.tables["table"].var_names) & set(target.var_names)
    assert len(model.genes) == 6 and set(model.genes) <= shared
    assert model.genes == sr.pp.select_genes(target[:, target.var_names.isin(shared)], n_top_genes=6)


def test_refusals_name_the_reference_and_the_genes_no_slide_shares(tmp_path):
    import spatialdata as sd

    target = sr.datasets.demo(seed=SEED, n_rows=12, n_cols=11, n_genes=12)
    small = sr.datasets.demo(seed=1, n_rows=12, n_cols=11, n_genes=12)
    sr.datasets.measure_demo_truth(small, bin_um=UNIT_UM, seed=1, footprint="disk").write(tmp_path / "ref.zarr")
    ref = sd.read_zarr(tmp_path / "ref.zarr")
    with pytest.raises(KeyError, match=r"In reference 1 \(.*ref\.zarr\): Image 'nope' not found"):
        sr.tl.train([ref, ref], image_key=["he", "nope"], reference=True, target=target, method="histology")
    (table_key,) = ref.tables.keys()
    ref.tables[table_key].var_names = [f"mouse_{g}" for g in ref.tables[table_key].var_names]
    with pytest.raises(ValueError, match=r"share no gene: reference 0 \(.*ref\.zarr\) measures 12 genes.*the target"):
        sr.tl.train([ref], image_key="he", reference=True, target=target, method="histology", scale=SCALE)


@pytest.fixture(scope="module")
def fine_bins(reference):
    """The reference's slide measured by square bins half the output's size (25 µm for 50 µm output bins)."""
    _, other = reference
    fine = sr.datasets.measure_demo_truth(other, bin_um=UNIT_UM / 2, seed=2)
    fine.tables["table"] = fine.tables["t"]
    del fine.tables["t"]
    return fine


def test_finer_bins_are_pooled_into_units_of_the_outputs_size(fine_bins, genes):
    from sr_spatial.core._aggregate import MIN_AGGREGATED_SHARE
    from sr_spatial.core._reference import reference_map

    where = SlideKeys()
    bins = sr.pp.build_st_map(fine_bins, "he", genes=genes, scale=1)
    units = reference_map(fine_bins, "he", slide=where, genes=genes, n_top_genes=50, aggregate=2)
    assert units.pitch == pytest.approx(2 * bins.pitch)
    # Each unit sums the counts of the bins whose centres it covers, and sits at their middle.
    first = bins.centres.min(axis=0) - bins.pitch / 2
    unit_of = np.floor((bins.centres - first) / units.pitch).astype(int)
    counts = np.asarray(bins.spots.counts.todense())
    cells = np.floor((units.centres - first) / units.pitch).astype(int)
    full = 0
    for k in (0, len(units.centres) // 3, len(units.centres) // 2, len(units.centres) - 1):
        under = (unit_of == cells[k]).all(axis=1)
        assert under.sum() >= MIN_AGGREGATED_SHARE * 4
        np.testing.assert_allclose(units.spots.counts[k].toarray().ravel(), counts[under].sum(axis=0))
        if under.sum() == 4:  # a whole unit is centred on its bins
            full += 1
            np.testing.assert_allclose(units.centres[k], bins.centres[under].mean(axis=0), atol=1e-6)
    assert full >= 1
    # The units are the grid's bins, one to one.
    ij = units.grid.index_of(units.centres)
    np.testing.assert_allclose(units.grid.centres()[ij[:, 0], ij[:, 1]], units.centres, atol=1e-6)
    np.testing.assert_allclose(units.nearest[:, ij[:, 0], ij[:, 1]].T, units.values, atol=1e-6)


def test_a_model_trained_on_pooled_finer_bins_beats_the_measurement(fine_bins, demo_sdata, genes):
    model = sr.tl.train(
        fine_bins, "he", reference=True, aggregate=2, target=demo_sdata, scale=SCALE, genes=genes, seed=SEED,
        method="histology", show_progress_bar=False,
    )  # fmt: skip
    sdata = copy.deepcopy(demo_sdata)
    scores = {}
    for name, chosen in (("nearest", None), ("pooled", model)):
        sr.tl.superresolve(
            sdata, IMAGE_KEY, scale=SCALE, model=chosen, method="nearest" if chosen is None else None, genes=genes,
            seed=SEED, key_added=name, show_progress_bar=False,
        )  # fmt: skip
        scores[name] = sr.tl.evaluate(sdata, name, truth_key="demo_truth")["pearson"].mean()
    assert scores["pooled"] > scores["nearest"]
    assert sdata.tables["pooled_table"].uns["pooled"]["spot_residual"] < 1e-6


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"aggregate": 0, "reference": True}, "positive integer"), ({"aggregate": 2}, "reference=True")],
)
def test_aggregate_is_checked_before_the_slides_are_read(fine_bins, kwargs, match):
    with pytest.raises(ValueError, match=match):
        sr.tl.train(fine_bins, "he", method="histology", show_progress_bar=False, **kwargs)


def test_superresolve_refuses_reference_aggregate_without_references(demo_sdata):
    with pytest.raises(ValueError, match="pass `reference=` too"):
        sr.tl.superresolve(demo_sdata, IMAGE_KEY, reference_aggregate=2, inplace=False)


def test_units_rendered_without_their_expression_keep_the_same_mask_and_footprint(fine_bins, genes):
    from sr_spatial.core._reference import reference_map

    maps = [
        reference_map(fine_bins, "he", slide=SlideKeys(), genes=genes, n_top_genes=50, expression=expression)
        for expression in (True, False)
    ]
    assert maps[1].nearest is None and maps[1].smooth is None
    np.testing.assert_array_equal(maps[0].mask, maps[1].mask)
    np.testing.assert_array_equal(maps[0].footprint, maps[1].footprint)
    assert maps[0].grid == maps[1].grid
