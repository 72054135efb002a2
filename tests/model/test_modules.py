"""The paper's modules: gene-correlation graph, disentangling + CMAM, dynamic cross-attention, ablation flags."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sr_spatial.core._image_encoder import Encoder
from sr_spatial.core._pixel_encoder import HED_ROWS, HISTOLOGY_INPUTS, cell_channels, histology_inputs
from sr_spatial.diffusion._config import resolve_config
from sr_spatial.diffusion.module._network import DiffSTNetwork
from sr_spatial.diffusion.module._sampler import blend_ramp, tile_starts
from sr_spatial.diffusion.nn._attention import DynamicCrossAttention
from sr_spatial.diffusion.nn._cmam import CMAM, Disentangler, disentangling_loss
from sr_spatial.diffusion.nn._denoiser import UNet
from sr_spatial.diffusion.nn._gene_graph import GeneGraphModulation, build_gene_graph
from sr_spatial.diffusion.nn._registry import ENCODERS, build_encoder
from sr_spatial.model import ABLATIONS, PRESETS

SEED = 0


def _perturb_zero_layers(module: torch.nn.Module) -> None:
    """Give the zero-initialised output layers weights, so gradients reach every parameter."""
    generator = torch.Generator().manual_seed(SEED)
    with torch.no_grad():
        for p in module.parameters():
            if torch.count_nonzero(p) == 0:
                p.copy_(0.1 * torch.randn(p.shape, generator=generator))


def _assert_every_parameter_learns(module: torch.nn.Module, skip: tuple[str, ...] = ()) -> None:
    for name, p in module.named_parameters():
        if not p.requires_grad or name.startswith(skip):
            continue
        assert p.grad is not None, name
        assert torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name


# --- gene-correlation graph ----------------------------------------------------------------------------------


@pytest.fixture
def coexpression() -> np.ndarray:
    """Six genes over 200 spots: genes 0-2 follow one programme, 3-4 another, gene 5 is constant."""
    rng = np.random.default_rng(SEED)
    a, b = rng.normal(size=(2, 200, 1))
    values = np.concatenate(
        [a + 0.1 * rng.normal(size=(200, 3)), -b + 0.1 * rng.normal(size=(200, 2)), np.ones((200, 1))], axis=1
    )
    return values


def test_gene_graph_links_coexpressed_genes(coexpression):
    graph = build_gene_graph(coexpression, k=2)
    assert graph.shape == (6, 6)
    assert graph.dtype == np.float32
    np.testing.assert_allclose(graph, graph.T)
    # Top-2 |r| neighbours: genes 0-2 link among themselves; 3 and 4 link to each other (anti-correlation
    # counts: |r|), and the constant gene keeps only its self-loop.
    assert (graph[:3, :3] > 0).all()
    assert graph[3, 4] > 0.3
    assert (graph[5, :5] == 0).all()
    assert graph[5, 5] == pytest.approx(1.0)
    assert (np.diag(graph) > 0).all()


def test_gene_graph_is_symmetric_normalised(coexpression):
    graph = build_gene_graph(coexpression, k=3)
    # D^-1/2 (A + I) D^-1/2 has largest eigenvalue 1 (its spectrum lies in (-1, 1]).
    assert np.linalg.eigvalsh(graph.astype(np.float64)).max() == pytest.approx(1.0, abs=1e-5)


def test_gene_graph_with_fewer_genes_than_k():
    graph = build_gene_graph(np.random.default_rng(SEED).normal(size=(20, 2)), k=8)
    assert graph.shape == (2, 2)
    assert (graph > 0).all()
    one = build_gene_graph(np.ones((5, 1)), k=8)
    np.testing.assert_allclose(one, [[1.0]])
    with pytest.raises(ValueError, match="n_observations, n_genes"):
        build_gene_graph(np.ones(5))


def test_gene_graph_modulation_starts_as_identity_and_learns(coexpression):
    torch.manual_seed(SEED)
    module = GeneGraphModulation(6, dim=8, emb_channels=12)
    module.set_graph(build_gene_graph(coexpression, k=2))
    output, emb = torch.randn(3, 6, 5, 7), torch.randn(3, 12)
    torch.testing.assert_close(module(output, emb), output)

    _perturb_zero_layers(module)
    modulated = module(output, emb)
    assert modulated.shape == output.shape
    modulated.square().mean().backward()
    _assert_every_parameter_learns(module)
    with pytest.raises(ValueError, match="gene graph must be"):
        module.set_graph(np.eye(5))


def test_gene_codes_follow_the_graph(coexpression):
    """Changing one gene's embedding changes the codes of the genes within two hops of it, and no others."""
    torch.manual_seed(SEED)
    graph = build_gene_graph(coexpression, k=1)
    module = GeneGraphModulation(6, dim=4, emb_channels=4)
    module.set_graph(graph)
    emb = torch.zeros(1, 4)
    with torch.no_grad():
        before = module.gene_codes(emb)
        module.embedding[0] += 1.0
        change = (module.gene_codes(emb) - before).abs().sum(dim=(0, 2)).numpy()
    two_hops = (graph @ graph)[0] > 0
    np.testing.assert_array_equal(change > 1e-7, two_hops)
    assert not two_hops.all()  # the constant gene is not linked to gene 0


# --- disentangling and CMAM ----------------------------------------------------------------------------------


def test_disentangler_shapes_and_losses():
    torch.manual_seed(SEED)
    net = Disentangler(expression_channels=5, histology_channels=7, channels=6)
    features = net(torch.randn(2, 5, 8, 9), torch.randn(2, 7, 8, 9))
    assert set(features) == {"shared_x", "specific_x", "shared_h", "specific_h"}
    for value in features.values():
        assert value.shape == (2, 6, 8, 9)
    mask = torch.ones(2, 1, 8, 9)
    loss = disentangling_loss(features, mask)
    assert loss > 0
    loss.backward()
    _assert_every_parameter_learns(net)


def test_disentangling_loss_is_zero_when_shared_agree_and_specific_are_orthogonal():
    shared = torch.tensor([1.0, 0.0, 0.0])[None, :, None, None].expand(1, 3, 4, 4)
    specific = torch.tensor([0.0, 1.0, 0.0])[None, :, None, None].expand(1, 3, 4, 4)
    features = {"shared_x": shared, "shared_h": 2 * shared, "specific_x": specific, "specific_h": -specific}
    mask = torch.ones(1, 1, 4, 4)
    assert disentangling_loss(features, mask) == pytest.approx(0.0, abs=1e-6)
    # Identical shared and specific parts are as far from disentangled as can be: 1 per modality.
    tangled = {"shared_x": shared, "shared_h": shared, "specific_x": shared, "specific_h": shared}
    assert disentangling_loss(tangled, mask) == pytest.approx(2.0, abs=1e-5)
    # Bins outside the mask do not count.
    assert disentangling_loss(tangled, torch.zeros(1, 1, 4, 4)) == 0


def test_cmam_starts_as_identity_and_gates_between_modalities():
    torch.manual_seed(SEED)
    block = CMAM(feature_channels=4, channels=6)
    features = {k: torch.randn(2, 4, 8, 8) for k in ("shared_x", "specific_x", "shared_h", "specific_h")}
    h = torch.randn(2, 6, 4, 4)  # a coarser UNet level: features are pooled to it
    torch.testing.assert_close(block(h, features), h)

    _perturb_zero_layers(block)
    out = block(h, features)
    assert out.shape == h.shape
    out.square().mean().backward()
    _assert_every_parameter_learns(block)
    # A gate saturated towards expression makes the histology features irrelevant, and the other way round.
    with torch.no_grad():
        block.gate.bias.fill_(50.0)
        changed_histology = {**features, "shared_h": torch.randn(2, 4, 8, 8)}
        torch.testing.assert_close(block(h, features), block(h, changed_histology))
        block.gate.bias.fill_(-50.0)
        changed_expression = {**features, "specific_x": torch.randn(2, 4, 8, 8)}
        torch.testing.assert_close(block(h, features), block(h, changed_expression))


# --- dynamic cross-attention ---------------------------------------------------------------------------------


@pytest.fixture
def attention() -> DynamicCrossAttention:
    torch.manual_seed(SEED)
    return DynamicCrossAttention(channels=8, token_channels=5, emb_channels=6, window=4, tissue_pool=2, heads=2)


def test_attention_shapes_identity_start_and_gradients(attention):
    h, cells, emb = torch.randn(2, 8, 10, 7), torch.randn(2, 5, 20, 14), torch.randn(2, 6)
    torch.testing.assert_close(attention(h, cells, emb), h)  # zero output projection
    _perturb_zero_layers(attention)
    out = attention(h, cells, emb)
    assert out.shape == h.shape
    out.square().mean().backward()
    _assert_every_parameter_learns(attention)


def test_attention_level_weights_depend_on_time(attention):
    weights = attention.level_weights(torch.randn(3, 6))
    assert weights.shape == (3, 2)
    torch.testing.assert_close(weights.sum(dim=1), torch.ones(3))
    assert not torch.allclose(weights[0], weights[1])


def test_attention_is_local(attention):
    """Bins see the histology of their window and its tissue context only: memory is bounded per window."""
    _perturb_zero_layers(attention)
    h, cells, emb = torch.randn(1, 8, 16, 16), torch.randn(1, 5, 32, 32), torch.randn(1, 6)
    changed = cells.clone()
    changed[..., 24:, 24:] += 5.0  # histology of the bottom-right window (bins 12-15)
    with torch.no_grad():
        difference = (attention(h, changed, emb) - attention(h, cells, emb)).abs().sum(dim=1)[0]
    assert difference[12:, 12:].min() > 0
    # The top-left window (bins 0-3) is more than one window away: untouched.
    assert difference[:4, :4].max() == 0


def test_attention_validates_its_geometry():
    with pytest.raises(ValueError, match="multiple of the tissue pooling"):
        DynamicCrossAttention(channels=8, token_channels=5, emb_channels=6, window=6, tissue_pool=4)
    with pytest.raises(ValueError, match="must divide the channels"):
        DynamicCrossAttention(channels=9, token_channels=5, emb_channels=6, heads=2)


# --- the denoiser with every module, and the ablation flags -------------------------------------------------


def test_unet_with_every_module_learns_end_to_end():
    torch.manual_seed(SEED)
    unet = UNet(
        in_channels=7,
        out_channels=3,
        channels=8,
        channel_mult=(1, 2),
        cmam_channels=4,
        attention={"token_channels": 5, "window": 4, "heads": 2},
        gene_graph_dim=4,
    )
    assert len(unet.cmam) == 4  # two down blocks, the middle block, one up block
    features = {k: torch.randn(2, 4, 12, 8) for k in ("shared_x", "specific_x", "shared_h", "specific_h")}
    x, t, cells = torch.randn(2, 7, 12, 8), torch.rand(2), torch.randn(2, 5, 24, 16)
    assert torch.count_nonzero(unet(x, t, features=features, cells=cells)) == 0
    _perturb_zero_layers(unet)
    out = unet(x, t, features=features, cells=cells)
    assert out.shape == (2, 3, 12, 8)
    out.square().mean().backward()
    _assert_every_parameter_learns(unet)


@pytest.mark.parametrize("variant", sorted(ABLATIONS))
def test_ablation_flags_switch_modules(variant):
    config = resolve_config("tiny", **ABLATIONS[variant])
    network = DiffSTNetwork(4, config)
    assert (network.disentangler is not None) == config.use_cmam
    assert (network.unet.cmam is not None) == config.use_cmam
    assert (network.unet.attention is not None) == config.use_cross_attention
    assert (network.unet.gene_graph is not None) == config.use_gene_graph
    assert ("unet.gene_graph.adjacency" in network.state_dict()) == config.use_gene_graph
    assert network.needs_cells == (config.use_cmam or config.use_cross_attention)

    n, p = 2, config.patch_bins
    cond, x_t, mask = torch.randn(n, 4 * 4 + 1, p, p), torch.randn(n, 4, p, p), torch.ones(n, 1, p, p)
    cells = torch.randn(n, cell_channels(config.histology_width), 2 * p, 2 * p)
    output, disentangle = network(x_t, torch.rand(n), cond, cells, mask=mask)
    assert output.shape == x_t.shape
    assert (disentangle > 0) == config.use_cmam
    if network.needs_cells:
        with pytest.raises(ValueError, match="pass `cells`"):
            network(x_t, torch.rand(n), cond)


def test_presets_are_named_by_size():
    assert {"tiny", "base", "large"} <= set(PRESETS)
    sizes = {name: sum(p.numel() for p in DiffSTNetwork(10, PRESETS[name]).parameters()) for name in PRESETS}
    assert sizes["tiny"] < sizes["base"] < sizes["large"]
    # The default is the first version, as accurate as any measured variant and the fastest.
    for name in PRESETS:
        assert resolve_config(name, **ABLATIONS["first_version"]) == PRESETS[name]
    full = resolve_config("base", **ABLATIONS["full"])
    assert full.use_cmam and full.use_cross_attention and full.use_gene_graph


# --- tiled sampling ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("length", "tile", "overlap"), [(10, 16, 4), (16, 16, 4), (40, 16, 4), (100, 32, 8)])
def test_tiles_cover_the_axis_with_the_overlap(length, tile, overlap):
    starts = tile_starts(length, tile, overlap)
    assert starts[0] == 0
    assert starts[-1] + min(tile, length) == length
    assert all(b - a <= tile - overlap for a, b in zip(starts, starts[1:], strict=False))
    ramp = blend_ramp(min(tile, length), overlap)
    assert (ramp > 0).all()
    assert ramp.max() == 1.0


# --- the histology encoder seam ----------------------------------------------------------------------------------


def test_network_takes_the_encoder_it_is_given():
    config = resolve_config("tiny")
    encoder = build_encoder(config.histology_encoder, n_genes=4, width=config.histology_width)
    assert isinstance(encoder, Encoder)
    assert (encoder.in_channels, encoder.out_channels) == (HISTOLOGY_INPUTS, 4)
    assert encoder.cell_channels == cell_channels(config.histology_width)
    assert encoder.um_per_px is None and encoder.estimates_expression and encoder.learns_from_spots
    network = DiffSTNetwork(4, config, encoder=encoder)
    assert network.encoder is encoder
    assert network.histology_mean.shape == (encoder.in_channels,)


def test_network_refuses_an_encoder_it_cannot_read():
    class Features(Encoder):
        estimates_expression = False

        def __init__(self):
            super().__init__()
            self.in_channels, self.out_channels, self.cell_channels = 3, 8, 0

    with pytest.raises(ValueError, match="estimates each of the 4 genes"):
        DiffSTNetwork(4, resolve_config("tiny"), encoder=Features())


def test_config_names_a_known_encoder():
    assert resolve_config("tiny").histology_encoder in ENCODERS
    with pytest.raises(ValueError, match="`histology_encoder` must be one of"):
        resolve_config("tiny", histology_encoder="no-such-encoder")


def test_histology_inputs_in_row_chunks_equal_the_whole_image():
    """The deconvolution runs a few rows at a time to bound memory; the inputs are those of the whole image."""
    from skimage.color import rgb2hed

    rgb = np.random.default_rng(SEED).random((3, HED_ROWS + 37, 23), dtype=np.float32)
    hed = rgb2hed(np.moveaxis(np.clip(rgb, 1e-3, 1.0), 0, -1))
    whole = np.concatenate([rgb, np.moveaxis(hed[..., :2], -1, 0)]).astype(np.float32)
    inputs = histology_inputs(rgb)
    assert inputs.shape == (HISTOLOGY_INPUTS, *rgb.shape[1:])
    np.testing.assert_array_equal(inputs, whole)


# --- histology encoder over a whole slide ------------------------------------------------------------------------


@pytest.fixture
def encoder_scene():
    """An untrained tiny model with fitted input statistics, and a tall random slide of 37 x 5 bins at 4 px/bin."""
    from sr_spatial.core._image_encoder import input_statistics
    from sr_spatial.model import DiffST, Scene

    torch.manual_seed(SEED)
    model = DiffST(["a", "b", "c"], config="tiny", device="cpu", seed=SEED)
    rng = np.random.default_rng(SEED)
    k, height, width = 4, 37, 5
    blank = np.zeros((3, height, width), dtype=np.float32)
    histology = rng.uniform(0.05, 1.0, size=(3, height * k, width * k)).astype(np.float32)
    scene = Scene(nearest=blank, smooth=blank, mask=np.ones((height, width), bool), histology=histology, px_per_bin=k)
    mean, std = input_statistics(histology, prepare=model.network.encoder.prepare)
    model.network.histology_mean.copy_(torch.from_numpy(mean))
    model.network.histology_std.copy_(torch.from_numpy(std))
    return model, scene


def test_input_statistics_in_row_chunks_match_the_whole_image(encoder_scene, monkeypatch):
    from sr_spatial.core import _image_encoder

    model, scene = encoder_scene
    monkeypatch.setattr(_image_encoder, "STATISTICS_ROWS", 7)
    mean, std = _image_encoder.input_statistics(scene.histology, prepare=model.network.encoder.prepare)
    whole = model.network.encoder.prepare(scene.histology).reshape(HISTOLOGY_INPUTS, -1).astype(np.float64)
    np.testing.assert_allclose(mean, whole.mean(axis=1), rtol=1e-12)
    np.testing.assert_allclose(std, whole.std(axis=1), rtol=1e-12)


@pytest.mark.parametrize("cells", [False, True])
def test_histology_maps_in_row_chunks_equal_the_whole_slide(encoder_scene, monkeypatch, cells):
    """Chunks read with the receptive field's margin give the whole slide's maps, cut or not."""
    from sr_spatial.core import _image_encoder as _chunks
    from sr_spatial.diffusion.module import _condition

    model, scene = encoder_scene
    encoder = model.network.encoder
    with torch.no_grad():
        inputs = _condition.standardised_histology(model, scene)[None]
        whole, whole_cells = encoder.bin_maps(inputs, scene.px_per_bin, cells=cells)
    # A budget of 32 pixel rows: chunks of 8 bins (the fewest, four margins), each read with 8 pixels of context.
    monkeypatch.setattr(_chunks, "CHUNK_ACTIVATIONS", 32 * scene.shape[1] * 4 * model.config.histology_width)
    expression, features = _condition.histology_maps(model, scene, cells=cells)
    np.testing.assert_allclose(expression, whole[0].numpy(), rtol=1e-6, atol=1e-6)
    if cells:
        np.testing.assert_allclose(features, whole_cells[0].numpy(), rtol=1e-6, atol=1e-6)
    else:
        assert features is None


def test_histology_crops_are_crops_of_the_whole_slides_inputs(encoder_scene):
    from sr_spatial.core._pixel_encoder import window
    from sr_spatial.diffusion.module._condition import histology_crops, standardised_histology

    model, scene = encoder_scene
    whole = standardised_histology(model, scene)
    crop = histology_crops(model, scene)
    height, width = scene.histology.shape[1:]
    padded = torch.nn.functional.pad(whole, (24, 24, 24, 24))
    for top, left in [(0, 0), (-5, -7), (height - 6, width - 3), (40, 2), (-20, width - 1)]:
        expected = padded[:, top + 24 : top + 36, left + 24 : left + 36]
        torch.testing.assert_close(crop(top, left, 12), expected, rtol=0, atol=1e-6)
        torch.testing.assert_close(window(whole, top, left, 12), expected, rtol=0, atol=0)
