"""The paper-faithful variants (``block_style``, ``modulation_style``), the
measured ``form="auto"`` of generated convolutions, and re-applying
hyperfan-in after tabular pretraining (``rescale_generators``)."""

from __future__ import annotations

import time

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from napari_hyperfusion.nn.build import build_model
from napari_hyperfusion.nn.config import (
    ConfigError,
    ModelConfig,
    authors_ad_config,
    paper_ad_config,
    paper_brain_age_config,
    resnet_hyper_sites,
)
from napari_hyperfusion.nn.hyper import (
    HyperConv3d,
    auto_form_choices,
    auto_form_override,
    clear_auto_forms,
    generated_variance_ratios,
    rescale_generators,
    set_auto_form_override,
)
from napari_hyperfusion.nn.networks import AiMedBlock, PreActBlock

SHAPE = (16, 16, 16)
TINY = dict(input_shape=SHAPE, base_filters=4)
AD_FUSIONS = ("hyperfusion", "imaging", "tabular", "concat", "film", "daft")


def variant_configs() -> list[ModelConfig]:
    """Every fusion in the authors' layout, and every FiLM/DAFT block style
    in both layouts."""
    configs = [paper_ad_config(f, block_style="paper", **TINY) for f in AD_FUSIONS]
    for fusion in ("film", "daft"):
        for modulation in ("paper", "ai-med"):
            for block in ("ours", "paper"):
                configs.append(paper_ad_config(fusion, block_style=block, modulation_style=modulation, **TINY))
    return configs


def variant_id(c: ModelConfig) -> str:
    return f"{c.fusion}-{c.block_style}-{c.modulation_style}"


def inputs(config: ModelConfig, batch: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, 1, *config.input_shape, generator=g), torch.randn(batch, config.tabular_dim, generator=g)


def perturbed(net: nn.Module) -> nn.Module:
    """Our FiLM/DAFT start as identity; give every network a non-trivial state."""
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return net.eval()


# -- 1. the variants -------------------------------------------------------------


@pytest.mark.parametrize("config", variant_configs(), ids=variant_id)
def test_variant_decode_of_encode_is_forward_and_batch_equivariant(config):
    net = perturbed(build_model(config))
    image, tabular = inputs(config, 4)
    perm = torch.tensor([2, 0, 3, 1])
    with torch.no_grad():
        out = net(image, tabular)
        torch.testing.assert_close(net.decode(net.encode_image(image), tabular), out, rtol=0, atol=0)
        alone = torch.cat([net(image[i : i + 1], tabular[i : i + 1]) for i in range(4)])
        permuted = net(image[perm], tabular[perm])
        other = net(image, tabular + 1.0)
    assert out.shape == (4, 3) and torch.isfinite(out).all()
    torch.testing.assert_close(alone, out, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(permuted, out[perm], rtol=1e-4, atol=1e-5)
    if config.uses_tabular:
        assert (other - out).abs().max() > 1e-5
    else:
        assert torch.equal(other, out)


@pytest.mark.parametrize("config", variant_configs(), ids=variant_id)
def test_variant_decode_broadcasts_one_scan_over_many_records(config):
    net = perturbed(build_model(config))
    image, _ = inputs(config, 1)
    _, tabular = inputs(config, 5, seed=7)
    with torch.no_grad():
        many = net.decode(net.encode_image(image), tabular)
        each = torch.cat([net(image, tabular[i : i + 1]) for i in range(5)])
    torch.testing.assert_close(many, each, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("site", resnet_hyper_sites())
def test_every_hyper_site_in_the_authors_layout_splits_exactly_and_is_equivariant(site):
    config = authors_ad_config(hyper_sites=(site,), **TINY)
    net = perturbed(build_model(config))
    image, tabular = inputs(config, 3)
    perm = torch.tensor([2, 0, 1])
    with torch.no_grad():
        out = net(image, tabular)
        torch.testing.assert_close(net.decode(net.encode_image(image), tabular), out, rtol=0, atol=0)
        torch.testing.assert_close(net(image[perm], tabular[perm]), out[perm], rtol=1e-4, atol=1e-5)


def test_authors_layout_of_the_paper_model():
    net = build_model(authors_ad_config(**TINY)).eval()
    stem = list(net.stem)
    assert [type(m) for m in stem] == [nn.Conv3d, nn.BatchNorm3d, nn.ReLU, nn.MaxPool3d]
    assert stem[0].bias is not None and (stem[3].kernel_size, stem[3].stride) == (2, 2)
    assert [b.drop.p for b in net.blocks] == [0.1, 0.2, 0.2, 0.3]
    assert all(isinstance(b.drop, nn.Dropout3d) and isinstance(b.drop_in, nn.Dropout3d) for b in net.blocks)
    assert net.final_norm is None and net.pooled_drop.p == 0.6 and net.head.drop.p == 0.5
    block4 = net.blocks[3]
    assert isinstance(block4.shortcut, HyperConv3d) and block4.shortcut_norm.num_features == 64  # conv -> BN
    assert net.blocks[0].shortcut_norm.num_features == 4 and net.blocks[0].shortcut.bias is not None  # BN -> conv
    # the cache is the raw block-4 input (for the generated shortcut) and its main path
    with torch.no_grad():
        features = net.encode_image(torch.randn(1, 1, *SHAPE))
    assert sorted(features) == ["m", "xs"] and features["xs"].shape[1] == 32


def test_our_layout_is_unchanged_by_default():
    config = paper_ad_config(**TINY)
    assert (config.block_style, config.modulation_style) == ("ours", "ours")
    keys = set(build_model(config).state_dict())
    assert not any("shortcut_norm" in k for k in keys) and "final_norm.weight" in keys
    assert "stem.0.weight" in keys and "stem.0.bias" not in keys and "stem.1.weight" not in keys
    # a stored config from before these fields reads as today's network
    old = {k: v for k, v in config.to_dict().items() if k not in ("block_style", "modulation_style")}
    assert ModelConfig.from_dict(old) == config


def _bn(bn: nn.BatchNorm3d, x: torch.Tensor) -> torch.Tensor:
    return F.batch_norm(x, bn.running_mean, bn.running_var, bn.weight, bn.bias, False, 0.0, bn.eps)


def test_authors_block_with_generated_shortcut_matches_their_formula():
    """x -> conv2(drop(relu(bn2(conv1(drop(relu(bn1(x))))))) + BN(hyper(x)), written out."""
    net = perturbed(build_model(authors_ad_config(**TINY)))
    block: PreActBlock = net.blocks[3]
    x, e = torch.randn(2, 32, 2, 2, 2), torch.randn(2, 8)
    with torch.no_grad():
        main = block.conv2(F.relu(_bn(block.bn2, block.conv1(F.relu(_bn(block.bn1, x))))))
        w, b = block.shortcut.generate(e)
        short = torch.cat([F.conv3d(x[i : i + 1], w[i], b[i], stride=2) for i in range(2)])
        expected = main + _bn(block.shortcut_norm, short)
        torch.testing.assert_close(block(x, e), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kind", ["film", "daft"])
def test_authors_film_daft_block_matches_their_formula(kind):
    """scale * x + shift on the raw block input (DAFT pools x), then their
    pre-activation block; the shortcut BN -> conv reads the unmodulated x."""
    net = build_model(authors_ad_config(kind, **TINY)).eval()
    block: PreActBlock = net.blocks[3]
    mod = block.modulation
    assert block.modulate_input and mod.mlp[0].bias is None and mod.mlp[2].bias is None
    assert mod.mlp[0].out_features == 7 and mod.mlp[0].in_features == 16 + (32 if kind == "daft" else 0)
    x, t = torch.randn(3, 32, 2, 2, 2), torch.randn(3, 16)
    with torch.no_grad():
        z = t if kind == "film" else torch.cat([x.mean(dim=(2, 3, 4)), t], 1)
        scale, shift = mod.mlp(z).chunk(2, 1)
        xm = scale[:, :, None, None, None] * x + shift[:, :, None, None, None]
        main = block.conv2(F.relu(_bn(block.bn2, block.conv1(F.relu(_bn(block.bn1, xm))))))
        expected = main + block.shortcut(_bn(block.shortcut_norm, x))
        torch.testing.assert_close(block(x, None, t), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kind", ["film", "daft"])
def test_ai_med_block_matches_their_published_block(kind):
    """ai-med location 3: conv1 -> BN (non-affine) -> scale * F + shift ->
    ReLU -> conv2 -> BN, + (conv1x1 -> BN)(x), -> ReLU; no biases;
    bottleneck int((C_in + T) / 7)."""
    net = build_model(paper_ad_config(kind, modulation_style="ai-med", **TINY)).eval()
    block = net.blocks[3]
    assert isinstance(block, AiMedBlock)
    assert not block.bn1.affine and block.conv1.bias is None and block.conv2.bias is None
    assert block.modulation.mlp[0].bias is None and block.modulation.mlp[2].bias is None
    assert block.modulation.mlp[0].out_features == int((32 + 16) / 7)
    x, t = torch.randn(3, 32, 2, 2, 2), torch.randn(3, 16)
    with torch.no_grad():
        f = _bn(block.bn1, block.conv1(x))
        z = t if kind == "film" else torch.cat([f.mean(dim=(2, 3, 4)), t], 1)
        scale, shift = block.modulation.mlp(z).chunk(2, 1)
        h = F.relu(scale[:, :, None, None, None] * f + shift[:, :, None, None, None])
        expected = F.relu(_bn(block.bn2, block.conv2(h)) + block.shortcut(x))
        torch.testing.assert_close(block(x, None, t), expected, rtol=1e-5, atol=1e-5)
        # what the what-if reads as DAFT's pooled input: bn1 of the cached "x"
        torch.testing.assert_close(block.bn1(block.encode(x)["x"]), f)


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"block_style": "resnet18"}, "unknown block_style 'resnet18'"),
        ({"modulation_style": "aimed"}, "unknown modulation_style 'aimed'"),
    ],
)
def test_bad_variant_values_are_refused(changes, message):
    with pytest.raises(ConfigError, match=message):
        paper_ad_config("daft").replace(**changes)


def test_paper_layout_is_refused_on_other_backbones():
    with pytest.raises(ConfigError, match="preact_resnet only"):
        paper_brain_age_config(block_style="paper")


def test_modulation_style_only_sticks_to_film_and_daft():
    assert paper_ad_config("hyperfusion", modulation_style="ai-med").modulation_style == "ours"
    config = authors_ad_config("daft", input_shape=(32, 48, 32))
    assert (config.block_style, config.modulation_style) == ("paper", "paper")
    assert ModelConfig.from_dict(config.to_dict()) == config


# -- 2. the measured auto form -----------------------------------------------------


@pytest.fixture()
def measured():
    """A clean slate: measure (no override), no earlier choices."""
    previous = set_auto_form_override(None)
    clear_auto_forms()
    yield
    clear_auto_forms()
    set_auto_form_override(previous)


def test_auto_measures_once_per_signature_and_reports_it(measured):
    layer = HyperConv3d(4, 6, 3, 5, padding=1)
    x, e = torch.randn(8, 4, 8, 8, 8), torch.randn(8, 5)
    rng = torch.random.get_rng_state()
    start = time.perf_counter()
    y = layer(x, e)
    elapsed = time.perf_counter() - start
    assert torch.equal(torch.random.get_rng_state(), rng)  # measuring draws no random numbers
    assert elapsed < 5.0  # a few ms-scale passes, loosely bounded for a busy machine
    (choice,) = auto_form_choices()
    assert choice.device == "cpu" and set(choice.times_ms) == {"grouped", "loop"}
    fastest = min(choice.times_ms, key=choice.times_ms.get)
    # the fixed rule's form (grouped) stays unless another is 10 % faster
    assert choice.form == fastest or (
        choice.form == "grouped" and choice.times_ms["grouped"] <= 1.1 * choice.times_ms[fastest]
    )
    assert choice.signature == ("float32", 4, 6, 3, 1, 1, (8, 8, 8), 8)
    assert layer.resolved_form() == choice.form
    with auto_form_override("loop"):
        torch.testing.assert_close(y, layer(x, e), rtol=1e-5, atol=1e-5)
    layer(x[:7], e[:7])  # batches 4-7 share bucket 4: a new choice
    layer(x[:6], e[:6])  # bucket 4 again: cached
    layer(torch.cat([x, x]), torch.cat([e, e]))  # 8 or more: bucket 8, cached
    assert [c.signature[-1] for c in auto_form_choices()] == [8, 4]


def test_auto_considers_bmm_for_unpadded_pointwise_kernels(measured):
    layer = HyperConv3d(8, 12, 1, 5, stride=2)
    layer(torch.randn(2, 8, 6, 6, 6), torch.randn(2, 5))
    (choice,) = auto_form_choices()
    assert set(choice.times_ms) == {"bmm", "grouped", "loop"}


def test_auto_override_is_deterministic():
    three, one = HyperConv3d(4, 6, 3, 5, padding=1), HyperConv3d(4, 6, 1, 5)
    x = torch.randn(2, 4, 4, 4, 4)
    with auto_form_override("static"):
        assert (three.resolved_form(x), one.resolved_form(x)) == ("grouped", "bmm")
    with auto_form_override("bmm"):
        assert (three.resolved_form(x), one.resolved_form(x)) == ("grouped", "bmm")
    with auto_form_override("loop"):
        assert (three.resolved_form(x), one.resolved_form(x)) == ("loop", "loop")
    assert HyperConv3d(4, 6, 3, 5, padding=1, form="loop").resolved_form(x) == "loop"
    with pytest.raises(ValueError, match="unknown auto-form override"):
        set_auto_form_override("fastest")


@pytest.mark.parametrize("k, s, p", [(3, 1, 1), (3, 2, 1), (1, 2, 0)])
def test_every_form_auto_may_pick_gives_the_same_result(measured, k, s, p):
    layer = HyperConv3d(4, 6, k, 5, stride=s, padding=p)
    with torch.no_grad():
        layer.weight_gen.bias.normal_(0, 0.1)
    x, e = torch.randn(5, 4, 7, 6, 5), torch.randn(5, 5)
    ref = layer(x, e)
    for form in layer._forms():
        with auto_form_override(form):
            torch.testing.assert_close(layer(x, e), ref, rtol=1e-5, atol=1e-5)


# -- 3. hyperfan-in again after tabular pretraining --------------------------------


def _as_if_pretrained(net: nn.Module, rows: torch.Tensor) -> None:
    """What tabular pretraining does to the embedding, in small and without
    an optimiser (kept cheap on a busy CPU): unequal dimensions, grown BN
    scales and shifts, a moved PReLU slope, running statistics of the rows."""
    emb = net.embedding
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        emb.linear.weight.mul_(1 + torch.rand(emb.linear.weight.shape, generator=g))
        emb.norm.weight.copy_(0.8 + torch.rand(emb.emb_dim, generator=g))
        emb.norm.bias.copy_(0.5 * torch.randn(emb.emb_dim, generator=g))
        emb.act.weight.fill_(0.4)
        emb.train()
        emb.norm.momentum = None  # cumulative average: one pass sets the statistics
        emb(rows)
        emb.norm.momentum = 0.1


def test_hyperfan_in_init_is_on_target_for_training_mode_embeddings():
    net = build_model(paper_ad_config(hyper_sites=("block4.shortcut", "fc1"), **TINY))
    for name, r in generated_variance_ratios(net, torch.randn(512, 16)).items():
        assert r["weight"] == pytest.approx(1.0, rel=0.15), name


def test_rescale_puts_generated_variance_back_on_the_hyperfan_in_target():
    config = paper_ad_config(hyper_sites=("block3.conv1", "block4.shortcut", "fc1"), **TINY)
    net = build_model(config)
    rows = torch.randn(256, 16)
    _as_if_pretrained(net, rows)
    running = net.embedding.norm.running_var.clone()
    report = rescale_generators(net, rows)
    assert set(report["layers"]) == {"blocks.2.conv1", "blocks.3.shortcut", "head.layers.0"}
    assert report["var_in"] > 1.5 * (1 + 0.25**2) / 2  # the second moment the layers were built for
    for name, r in report["layers"].items():
        assert abs(r["weight_before"] - 1) > 0.1, name  # it was off target
        assert r["weight_after"] == pytest.approx(1.0, rel=0.1), name
        assert r["bias_after"] == pytest.approx(1.0, rel=0.1), name
    again = generated_variance_ratios(net, rows)
    for name, r in report["layers"].items():
        assert again[name]["weight"] == pytest.approx(r["weight_after"], rel=1e-9)
    # measured on a copy: the embedding's running statistics did not move
    assert torch.equal(net.embedding.norm.running_var, running)


def test_textbook_rescale_sets_hyperfan_in_entry_variance():
    net = build_model(paper_ad_config(**TINY))
    rows = torch.randn(256, 16)
    _as_if_pretrained(net, rows)
    report = rescale_generators(net, rows, realised=False)
    layer = net.blocks[3].shortcut
    var_in = report["var_in"]
    assert layer.weight_gen.weight.square().mean().item() == pytest.approx(1 / (32 * 8 * var_in), rel=1e-4)
    assert layer.bias_gen.weight.square().mean().item() == pytest.approx(1 / (8 * var_in), rel=1e-4)
    # 2,048 generated weights: on target up to the draw's sampling error
    assert report["layers"]["blocks.3.shortcut"]["weight_after"] == pytest.approx(1.0, rel=0.25)


def test_rescale_with_the_tied_fill_embedding_is_exact():
    net = build_model(paper_brain_age_config(input_shape=SHAPE))
    one_hot = torch.tensor([[1.0, 0.0], [0.0, 1.0]] * 8)
    report = rescale_generators(net, one_hot)
    assert report["var_in"] == pytest.approx(1.0)
    for r in report["layers"].values():
        assert r["weight_after"] == pytest.approx(1.0, rel=1e-6)


def test_rescale_needs_hyper_layers():
    with pytest.raises(ValueError, match="no hyper layers"):
        rescale_generators(build_model(paper_ad_config("imaging", **TINY)), torch.randn(8, 16))
