"""Hyper layers: per-sample independence, equivariance, equality with a
plain per-sample reference, gradients, and the hyperfan-in initialisation."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from napari_hyperfusion.nn.hyper import FillEmbedding, HyperConv3d, HyperLinear, TabularEmbedding

CONV_CASES = [
    # (in, out, kernel, stride, padding, spatial, forms)
    (8, 12, 1, 2, 0, (6, 8, 6), ("auto", "bmm", "grouped", "loop")),
    (8, 12, 1, 1, 0, (5, 7, 3), ("auto", "bmm", "grouped", "loop")),
    (4, 6, 3, 1, 1, (6, 8, 6), ("auto", "grouped", "loop")),
    (4, 6, 3, 2, 1, (7, 9, 5), ("auto", "grouped", "loop")),
]
LINEAR_FORMS = ("auto", "factored", "einsum", "loop")
EMB = 5


def reference_conv(layer: HyperConv3d, x: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
    """Plain F.conv3d per sample, with weights read straight off the generators."""
    outs = []
    for i in range(x.shape[0]):
        w = F.linear(e[i], layer.weight_gen.weight, layer.weight_gen.bias).view(layer.weight_shape)
        b = F.linear(e[i], layer.bias_gen.weight, layer.bias_gen.bias)
        outs.append(F.conv3d(x[i : i + 1], w, b, stride=layer.stride, padding=layer.padding))
    return torch.cat(outs)


def reference_linear(layer: HyperLinear, x: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
    outs = []
    for i in range(x.shape[0]):
        w = F.linear(e[i], layer.weight_gen.weight, layer.weight_gen.bias).view(layer.weight_shape)
        b = F.linear(e[i], layer.bias_gen.weight, layer.bias_gen.bias)
        outs.append(F.linear(x[i : i + 1], w, b))
    return torch.cat(outs)


def _conv_layers():
    for cin, cout, k, s, p, spatial, forms in CONV_CASES:
        for form in forms:
            yield pytest.param(cin, cout, k, s, p, spatial, form, id=f"k{k}s{s}-{form}")


@pytest.mark.parametrize("cin,cout,k,s,p,spatial,form", list(_conv_layers()))
def test_conv_matches_per_sample_reference(cin, cout, k, s, p, spatial, form):
    layer = HyperConv3d(cin, cout, k, EMB, stride=s, padding=p, form=form)
    with torch.no_grad():  # non-zero generator biases so c_w matters too
        layer.weight_gen.bias.normal_(0, 0.1)
    x, e = torch.randn(5, cin, *spatial), torch.randn(5, EMB)
    torch.testing.assert_close(layer(x, e), reference_conv(layer, x, e), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("cin,cout,k,s,p,spatial,form", list(_conv_layers()))
def test_conv_output_depends_only_on_its_own_sample(cin, cout, k, s, p, spatial, form):
    layer = HyperConv3d(cin, cout, k, EMB, stride=s, padding=p, form=form)
    x, e = torch.randn(4, cin, *spatial), torch.randn(4, EMB)
    y = layer(x, e)
    x2, e2 = x.clone(), e.clone()
    x2[2] += torch.randn_like(x2[2])
    e2[2] += 1.0
    y2 = layer(x2, e2)
    for i in (0, 1, 3):
        torch.testing.assert_close(y2[i], y[i], rtol=0, atol=1e-6)
    assert (y2[2] - y[2]).abs().max() > 1e-3


@pytest.mark.parametrize("cin,cout,k,s,p,spatial,form", list(_conv_layers()))
def test_conv_is_batch_permutation_equivariant(cin, cout, k, s, p, spatial, form):
    layer = HyperConv3d(cin, cout, k, EMB, stride=s, padding=p, form=form)
    x, e = torch.randn(5, cin, *spatial), torch.randn(5, EMB)
    perm = torch.tensor([3, 0, 4, 1, 2])
    torch.testing.assert_close(layer(x[perm], e[perm]), layer(x, e)[perm], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("form", LINEAR_FORMS)
def test_linear_matches_reference_and_is_independent(form):
    layer = HyperLinear(11, 7, EMB, form=form)
    with torch.no_grad():
        layer.weight_gen.bias.normal_(0, 0.1)
    x, e = torch.randn(6, 11), torch.randn(6, EMB)
    y = layer(x, e)
    torch.testing.assert_close(y, reference_linear(layer, x, e), rtol=1e-5, atol=1e-5)
    perm = torch.tensor([5, 4, 3, 0, 1, 2])
    torch.testing.assert_close(layer(x[perm], e[perm]), y[perm], rtol=1e-5, atol=1e-6)
    e2 = e.clone()
    e2[0] += 1.0
    y2 = layer(x, e2)
    torch.testing.assert_close(y2[1:], y[1:], rtol=0, atol=1e-6)
    assert (y2[0] - y[0]).abs().max() > 1e-3


@pytest.mark.parametrize("form", ["bmm", "grouped"])
def test_gradients_reach_generators_and_embedding(form):
    embedding = TabularEmbedding(16, EMB)
    layer = HyperConv3d(4, 6, 1, EMB, stride=2, form=form)
    head = HyperLinear(6, 3, EMB)
    x, t = torch.randn(4, 4, 6, 6, 6), torch.randn(4, 16)
    e = embedding(t)
    y = head(layer(x, e).mean(dim=(2, 3, 4)), e)
    y.square().sum().backward()
    for name, p in [
        ("conv weight_gen", layer.weight_gen.weight),
        ("conv bias_gen", layer.bias_gen.weight),
        ("linear weight_gen", head.weight_gen.weight),
        ("embedding", embedding.linear.weight),
    ]:
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_hyperfan_in_gives_generated_weights_variance_one_over_fan_in():
    # Chang et al. (2020): Var(W) = 1 / fan_in when Var(A) = 1/(fan_in*emb*var_in)
    layer = HyperConv3d(16, 32, 3, 8, padding=1, var_in=1.0)
    e = torch.randn(256, 8)  # second moment 1
    w, b = layer.generate(e)
    fan_in = 16 * 27
    assert w.var().item() == pytest.approx(1.0 / fan_in, rel=0.1)
    assert b.var().item() == pytest.approx(1.0, rel=0.15)
    assert torch.all(layer.weight_gen.bias == 0) and torch.all(layer.bias_gen.bias == 0)


def test_embedding_second_moments():
    emb = TabularEmbedding(16, 8).train()
    e = emb(torch.randn(4096, 16) * 3 + 1)  # BN normalises whatever comes in
    assert e.square().mean().item() == pytest.approx(emb.second_moment, rel=0.1)
    fill = FillEmbedding(2, 1)
    one_hot = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    assert torch.equal(fill(one_hot), torch.ones(2, 1))


def test_bmm_form_refuses_kernels_it_cannot_compute():
    with pytest.raises(ValueError, match="bmm"):
        HyperConv3d(4, 4, 3, EMB, padding=1, form="bmm")
    with pytest.raises(ValueError, match="unknown form"):
        HyperLinear(4, 4, EMB, form="magic")


def test_mismatched_batches_are_refused():
    layer = HyperConv3d(4, 6, 1, EMB)
    with pytest.raises(ValueError, match="batch mismatch"):
        layer(torch.randn(3, 4, 4, 4, 4), torch.randn(2, EMB))
