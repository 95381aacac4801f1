"""Every architecture of both tasks: shapes, the encode/decode split, hyper
placement, batch independence and config validation."""

from __future__ import annotations

import pytest
import torch
from conftest import AD_TEST_SHAPE, config_id, random_inputs, small_configs

from napari_hyperfusion.nn.build import build_model
from napari_hyperfusion.nn.config import (
    ConfigError,
    ModelConfig,
    paper_ad_config,
    paper_brain_age_config,
    resnet_hyper_sites,
)
from napari_hyperfusion.nn.hyper import HyperConv3d, HyperLinear

CONFIGS = small_configs()


@pytest.mark.parametrize("config", CONFIGS, ids=config_id)
def test_forward_shape_and_decode_of_encode_equals_forward(config):
    net = build_model(config).eval()
    image, tabular = random_inputs(config, batch=3)
    with torch.no_grad():
        out = net(image, tabular)
        features = net.encode_image(image)
        assert out.shape == (3, config.n_outputs)
        assert torch.isfinite(out).all()
        torch.testing.assert_close(net.decode(features, tabular), out, rtol=0, atol=0)


@pytest.mark.parametrize("config", CONFIGS, ids=config_id)
def test_outputs_are_independent_across_the_batch(config):
    net = build_model(config).eval()
    image, tabular = random_inputs(config, batch=4)
    with torch.no_grad():
        together = net(image, tabular)
        alone = torch.cat([net(image[i : i + 1], tabular[i : i + 1]) for i in range(4)])
        perm = torch.tensor([2, 0, 3, 1])
        permuted = net(image[perm], tabular[perm])
    torch.testing.assert_close(together, alone, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(permuted, together[perm], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("config", CONFIGS, ids=config_id)
def test_tabular_input_matters_exactly_when_the_model_uses_it(config):
    net = build_model(config)
    # FiLM/DAFT start as identity by design; give them a non-trivial state
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.05 * torch.randn_like(p))
    net.eval()
    image, tabular = random_inputs(config, batch=2)
    other = 1.0 - tabular if config.backbone == "brain_age_cnn" else tabular + 1.0  # other sex
    with torch.no_grad():
        changed = (net(image, tabular) - net(image, other)).abs().max().item()
    if config.uses_tabular:
        assert changed > 1e-5
    else:
        assert changed == 0.0


@pytest.mark.parametrize("config", CONFIGS, ids=config_id)
def test_decode_broadcasts_one_scan_over_many_records(config):
    net = build_model(config).eval()
    image, _ = random_inputs(config, batch=1)
    _, tabular = random_inputs(config, batch=5, seed=7)
    with torch.no_grad():
        features = net.encode_image(image)
        many = net.decode(features, tabular)
        each = torch.cat([net(image, tabular[i : i + 1]) for i in range(5)])
    torch.testing.assert_close(many, each, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("site", resnet_hyper_sites())
def test_every_resnet_hyper_site_can_be_generated(site):
    config = paper_ad_config(hyper_sites=(site,), input_shape=AD_TEST_SHAPE)
    net = build_model(config).eval()
    hyper = net.hyper_layers()
    assert len(hyper) == 1
    ((name, layer),) = hyper.items()
    expected = HyperLinear if site.startswith("fc") else HyperConv3d
    assert isinstance(layer, expected)
    image, tabular = random_inputs(config, batch=2)
    with torch.no_grad():
        torch.testing.assert_close(net.decode(net.encode_image(image), tabular), net(image, tabular), rtol=0, atol=0)


def test_paper_ad_model_caches_the_whole_backbone():
    """Only block 4's generated shortcut and the head are left for decode:
    the cache is block 4's pre-activated input and its finished main path."""
    config = paper_ad_config()
    assert config.input_shape == (64, 96, 64) and config.hyper_sites == ("block4.shortcut",)
    net = build_model(config).eval()
    assert list(net.hyper_layers()) == ["blocks.3.shortcut"]
    shortcut = net.blocks[3].shortcut
    assert (shortcut.in_channels, shortcut.out_channels, shortcut.kernel_size, shortcut.stride) == (128, 256, 1, 2)
    assert shortcut.weight_gen.out_features == 32768 and shortcut.bias_gen.out_features == 256
    with torch.no_grad():
        features = net.encode_image(torch.randn(1, 1, 64, 96, 64))
    assert {k: tuple(v.shape) for k, v in features.items()} == {"a": (1, 128, 8, 12, 8), "m": (1, 256, 4, 6, 4)}


def test_brain_age_model_starts_with_both_sexes_tied():
    config = paper_brain_age_config(input_shape=(16, 16, 16))
    net = build_model(config).eval()
    assert sorted(net.hyper_layers()) == [f"head.layers.{i}" for i in range(4)]
    image = torch.randn(1, 1, 16, 16, 16)
    with torch.no_grad():
        female = net(image, torch.tensor([[1.0, 0.0]]))
        male = net(image, torch.tensor([[0.0, 1.0]]))
    torch.testing.assert_close(female, male, rtol=0, atol=0)


def test_regression_output_is_scaled_to_years():
    config = paper_brain_age_config("imaging", input_shape=(16, 16, 16))
    image, tabular = random_inputs(config, batch=2)
    base = build_model(config).eval()
    scaled = build_model(config.replace(output_shift=60.0, output_scale=10.0)).eval()
    scaled.load_state_dict(base.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(scaled(image, tabular), base(image, tabular) * 10.0 + 60.0)


def test_a_leaky_head_passes_gradient_where_a_relu_head_is_silent():
    """The shipped brain-age file's failure (docs/models.md, "The head goes
    silent for old brains"): when every unit of the head's first layer is
    off, a ReLU head answers its bias whatever the scan and passes no
    gradient; a leaky one still does. Old files, without the key, stay ReLU."""
    relu = paper_brain_age_config(input_shape=(16, 16, 16))
    assert relu.head_activation == "relu"
    assert ModelConfig.from_dict({k: v for k, v in relu.to_dict().items() if k != "head_activation"}) == relu
    image, tabular = torch.randn(2, 1, 16, 16, 16), torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    grads = {}
    for activation in ("relu", "leaky_relu"):
        torch.manual_seed(0)
        net = build_model(relu.replace(head_activation=activation)).eval()
        first = net.head.layers[0]  # a HyperLinear: its weight and bias generated from the sex embedding
        with torch.no_grad():  # small generated weights and a bias of -1000: every unit off, whatever the scan
            first.weight_gen.weight.zero_()
            first.weight_gen.bias.normal_(0.0, 0.01)
            first.bias_gen.weight.zero_()
            first.bias_gen.bias.fill_(-1000.0)
        x = image.clone().requires_grad_(True)
        net(x, tabular).sum().backward()
        grads[activation] = x.grad.abs().sum().item()
    assert grads["relu"] == 0.0 and grads["leaky_relu"] > 0.0


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"backbone": "vit"}, "unknown architecture backbone 'vit'"),
        ({"fusion": "attention"}, "fusion 'attention' is not available"),
        ({"hyper_sites": ("block5.conv1",)}, "unknown hyper_sites"),
        ({"hyper_sites": ()}, "at least one"),
        ({"input_shape": (8, 96, 64)}, "needs every input dimension >= 16"),
        ({"dropout": 1.5}, "dropout"),
        ({"embedding": "transformer"}, "unknown embedding"),
        ({"head_activation": "gelu"}, "unknown head_activation 'gelu'"),
    ],
)
def test_invalid_configs_are_refused_with_a_clear_message(changes, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        paper_ad_config().replace(**changes)


def test_film_and_daft_are_refused_on_the_brain_age_cnn():
    with pytest.raises(ConfigError, match="not available on brain_age_cnn"):
        paper_brain_age_config("film")


def test_config_round_trips_through_a_dict():
    config = paper_ad_config("daft", input_shape=(32, 48, 32))
    assert ModelConfig.from_dict(config.to_dict()) == config
    with pytest.raises(ConfigError, match="unknown config key"):
        ModelConfig.from_dict({**config.to_dict(), "colour": "blue"})


def test_model_needs_its_own_input_size():
    net = build_model(paper_ad_config(input_shape=AD_TEST_SHAPE)).eval()
    with pytest.raises(ValueError, match="image must be"):
        net(torch.randn(1, 1, 20, 24, 16), torch.randn(1, 16))
    with pytest.raises(ValueError, match="tabular must be"):
        net(torch.randn(1, 1, *AD_TEST_SHAPE), torch.randn(1, 15))
