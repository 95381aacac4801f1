"""Hypernetwork layers: layers whose parameters are generated per sample.

A hyper layer owns two small linear *generators* that map a tabular
embedding ``e`` (shape ``[B, emb_dim]``) to the weights and biases of an
ordinary layer, one set per sample::

    W_b = reshape(A_w e_b + c_w)        # [out, in, *kernel]
    b_b = A_b e_b + c_b                 # [out]
    y_b = layer(x_b; W_b, b_b)

Every form below computes all samples of a batch at once (no Python loop
over samples, except the ``"loop"`` reference form used by the tests and the
benchmark). Each output depends on its own sample only, so the layers are
equivariant to a permutation of the batch. (The public HyperFusion code's
per-sample loop pairs output ``i + 1`` with input ``i``; the tests here guard
against that class of bug.)

Initialisation follows Chang, Flokas & Lipson (2020), "Principled weight
initialization for hypernetworks" (hyperfan-in): generator entries are
uniform with variance ``1 / (fan_in * emb_dim * var_in)`` for weights and
``1 / (emb_dim * var_in)`` for biases, generator biases zero, where
``var_in`` is the second moment of the embedding, so that the generated
weights start with variance ``1 / fan_in`` like a Kaiming/LeCun layer.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "TabularEmbedding",
    "FillEmbedding",
    "HyperLinear",
    "HyperConv3d",
    "hyperfan_in_",
    "LINEAR_FORMS",
    "CONV_FORMS",
]

LinearForm = Literal["auto", "factored", "einsum", "loop"]
ConvForm = Literal["auto", "bmm", "grouped", "loop"]
LINEAR_FORMS: tuple[str, ...] = ("auto", "factored", "einsum", "loop")
CONV_FORMS: tuple[str, ...] = ("auto", "bmm", "grouped", "loop")


class TabularEmbedding(nn.Module):
    """The paper's tabular embedding: ``Linear -> BatchNorm1d -> PReLU``.

    Shapes: ``t [B, n_features] -> e [B, emb_dim]``.
    """

    def __init__(self, n_features: int, emb_dim: int) -> None:
        super().__init__()
        self.linear = nn.Linear(n_features, emb_dim)
        self.norm = nn.BatchNorm1d(emb_dim)
        self.act = nn.PReLU(init=0.25)
        self.emb_dim = emb_dim

    @property
    def second_moment(self) -> float:
        """E[e^2] at initialisation: BN makes the pre-activation ~N(0, 1) and
        PReLU with slope ``a`` keeps ``(1 + a^2) / 2`` of its second moment."""
        a = float(self.act.weight.detach().mean())
        return (1.0 + a * a) / 2.0

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        return self.act(self.norm(self.linear(t)))


class FillEmbedding(nn.Module):
    """A bias-free linear embedding whose weights start filled with ones.

    The brain-age model of the paper feeds the one-hot sex vector through this
    1-d embedding: at initialisation both sexes map to ``e = 1`` and hence to
    identical generated weights ("tied"); training can then pull them apart.
    Shapes: ``t [B, n_features] -> e [B, emb_dim]``.
    """

    def __init__(self, n_features: int, emb_dim: int = 1) -> None:
        super().__init__()
        self.linear = nn.Linear(n_features, emb_dim, bias=False)
        nn.init.ones_(self.linear.weight)
        self.emb_dim = emb_dim

    @property
    def second_moment(self) -> float:
        # one-hot inputs through all-ones weights give e == 1 exactly
        return 1.0

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        return self.linear(t)


def hyperfan_in_(weight_gen: nn.Linear, bias_gen: nn.Linear | None, fan_in: int, var_in: float) -> None:
    """Chang et al. (2020) hyperfan-in initialisation of a hyper layer's
    generators, in place. ``fan_in`` is the generated layer's fan-in
    (``in_channels * prod(kernel)``), ``var_in`` the embedding's second
    moment."""
    emb_dim = weight_gen.in_features
    if var_in <= 0:
        raise ValueError(f"var_in must be positive, got {var_in}")
    bound_w = math.sqrt(3.0 / (fan_in * emb_dim * var_in))
    with torch.no_grad():
        weight_gen.weight.uniform_(-bound_w, bound_w)
        weight_gen.bias.zero_()
        if bias_gen is not None:
            bound_b = math.sqrt(3.0 / (emb_dim * var_in))
            bias_gen.weight.uniform_(-bound_b, bound_b)
            bias_gen.bias.zero_()


class _HyperBase(nn.Module):
    """Shared generator plumbing for hyper layers."""

    weight_shape: tuple[int, ...]

    def _make_generators(self, emb_dim: int, fan_in: int, n_out: int, bias: bool, var_in: float) -> None:
        n_weights = math.prod(self.weight_shape)
        self.emb_dim = emb_dim
        self.weight_gen = nn.Linear(emb_dim, n_weights)
        self.bias_gen = nn.Linear(emb_dim, n_out) if bias else None
        hyperfan_in_(self.weight_gen, self.bias_gen, fan_in, var_in)

    def generate(self, e: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Per-sample parameters from the embedding.

        ``e [B, emb_dim] -> (W [B, *weight_shape], b [B, out] or None)``.
        """
        if e.dim() != 2 or e.shape[1] != self.emb_dim:
            raise ValueError(f"embedding must be [B, {self.emb_dim}], got {tuple(e.shape)}")
        w = self.weight_gen(e).view(e.shape[0], *self.weight_shape)
        b = self.bias_gen(e) if self.bias_gen is not None else None
        return w, b

    def _generator_terms(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(A [emb, *weight_shape], c [*weight_shape])``: W_b = sum_k e_bk A_k + c."""
        a = self.weight_gen.weight.t().reshape(self.emb_dim, *self.weight_shape)
        c = self.weight_gen.bias.view(*self.weight_shape)
        return a, c

    def _bias(self, e: torch.Tensor) -> torch.Tensor | None:
        return self.bias_gen(e) if self.bias_gen is not None else None


class HyperLinear(_HyperBase):
    """A linear layer with per-sample generated weights.

    Shapes: ``x [B, in_features], e [B, emb_dim] -> y [B, out_features]``.

    Forms (identical results up to float rounding):

    - ``"factored"``: ``y = (x (x) e) A^T + x c^T + b``; two dense GEMMs, the
      per-sample weights are never materialised. Fastest when ``emb_dim`` is
      small (see ``benchmarks/bench_hyper_layers.py``); the default.
    - ``"einsum"``: materialise ``W [B, out, in]`` and ``bmm``.
    - ``"loop"``: per-sample ``F.linear``; a reference for tests.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        emb_dim: int,
        bias: bool = True,
        var_in: float = 1.0,
        form: LinearForm = "auto",
    ) -> None:
        super().__init__()
        if form not in LINEAR_FORMS:
            raise ValueError(f"unknown form {form!r}; choose from {LINEAR_FORMS}")
        self.in_features, self.out_features = in_features, out_features
        self.weight_shape = (out_features, in_features)
        self.form = form
        self._make_generators(emb_dim, in_features, out_features, bias, var_in)

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, "
            f"emb_dim={self.emb_dim}, form={self.form}"
        )

    def forward(self, x: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
        if x.shape[0] != e.shape[0]:
            raise ValueError(f"batch mismatch: x {x.shape[0]} vs e {e.shape[0]}")
        form = "factored" if self.form == "auto" else self.form
        if form == "factored":
            a, c = self._generator_terms()  # [emb, out, in], [out, in]
            z = (x.unsqueeze(1) * e.unsqueeze(2)).flatten(1)  # [B, emb*in]
            y = z @ a.permute(0, 2, 1).reshape(-1, self.out_features) + x @ c.t()
            b = self._bias(e)
            return y if b is None else y + b
        w, b = self.generate(e)
        if form == "einsum":
            y = torch.bmm(w, x.unsqueeze(2)).squeeze(2)
            return y if b is None else y + b
        outs = [F.linear(x[i : i + 1], w[i], None if b is None else b[i]) for i in range(x.shape[0])]
        return torch.cat(outs, 0)


class HyperConv3d(_HyperBase):
    """A 3D convolution with per-sample generated weights and biases.

    Shapes: ``x [B, C_in, D, H, W], e [B, emb_dim] -> y [B, C_out, D', H', W']``.

    Forms (identical results up to float rounding):

    - ``"bmm"``: for 1x1x1 kernels without padding only: subsample by the
      stride and apply ``W [B, out, in]`` with one batched matrix product.
    - ``"grouped"``: fold the batch into the channels and run one grouped
      convolution with ``groups = B``.
    - ``"loop"``: per-sample ``F.conv3d``; a reference for tests.
    - ``"auto"``: ``bmm`` where it applies, else ``grouped``; chosen from the
      measurements of ``benchmarks/bench_hyper_layers.py`` (a factored
      dense-convolution form was measured too and lost everywhere: it does
      ``emb_dim + 1`` times the work).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        emb_dim: int,
        stride: int = 1,
        padding: int = 0,
        bias: bool = True,
        var_in: float = 1.0,
        form: ConvForm = "auto",
    ) -> None:
        super().__init__()
        if form not in CONV_FORMS:
            raise ValueError(f"unknown form {form!r}; choose from {CONV_FORMS}")
        k = kernel_size
        if form == "bmm" and (k != 1 or padding != 0):
            raise ValueError("form='bmm' needs kernel_size=1 and padding=0")
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size, self.stride, self.padding = k, stride, padding
        self.weight_shape = (out_channels, in_channels, k, k, k)
        self.form = form
        self._make_generators(emb_dim, in_channels * k**3, out_channels, bias, var_in)

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
            f"stride={self.stride}, padding={self.padding}, emb_dim={self.emb_dim}, "
            f"form={self.form}"
        )

    def resolved_form(self) -> str:
        if self.form != "auto":
            return self.form
        return "bmm" if self.kernel_size == 1 and self.padding == 0 else "grouped"

    def forward(self, x: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
        if x.dim() != 5:
            raise ValueError(f"expected x [B, C, D, H, W], got {tuple(x.shape)}")
        if x.shape[0] != e.shape[0]:
            raise ValueError(f"batch mismatch: x {x.shape[0]} vs e {e.shape[0]}")
        form = self.resolved_form()
        w, b = self.generate(e)
        batch, s = x.shape[0], self.stride
        if form == "bmm":
            xs = x[:, :, ::s, ::s, ::s]
            spatial = xs.shape[2:]
            w2 = w.view(batch, self.out_channels, self.in_channels)
            flat = xs.reshape(batch, self.in_channels, -1)
            y = torch.bmm(w2, flat) if b is None else torch.baddbmm(b.unsqueeze(2), w2, flat)
            return y.view(batch, self.out_channels, *spatial)
        if form == "grouped":
            y = F.conv3d(
                x.reshape(1, batch * self.in_channels, *x.shape[2:]),
                w.reshape(batch * self.out_channels, *self.weight_shape[1:]),
                None if b is None else b.reshape(-1),
                stride=s,
                padding=self.padding,
                groups=batch,
            )
            return y.view(batch, self.out_channels, *y.shape[2:])
        outs = [F.conv3d(x[i : i + 1], w[i], None if b is None else b[i], s, self.padding) for i in range(batch)]
        return torch.cat(outs, 0)
