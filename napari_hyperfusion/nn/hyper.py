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
:func:`rescale_generators` re-applies it with ``var_in`` measured on real
rows, after the embedding has been pretrained on the tabular task.

``form="auto"`` of :class:`HyperConv3d` is decided by a measurement: the
first time a layer meets a given (device, dtype, layer shape, input size,
batch bucket), every applicable form is timed on that very input and the
fastest is kept for the rest of the process (:func:`auto_form_choices`
reports the choices and their times; :func:`auto_form_override` pins them,
e.g. in tests).
"""

from __future__ import annotations

import copy
import math
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "TabularEmbedding",
    "FillEmbedding",
    "HyperLinear",
    "HyperConv3d",
    "hyperfan_in_",
    "rescale_generators",
    "generated_variance_ratios",
    "auto_form_choices",
    "clear_auto_forms",
    "set_auto_form_override",
    "auto_form_override",
    "AutoFormChoice",
    "LINEAR_FORMS",
    "CONV_FORMS",
]

LinearForm = Literal["auto", "factored", "einsum", "loop"]
ConvForm = Literal["auto", "bmm", "grouped", "loop"]
LINEAR_FORMS: tuple[str, ...] = ("auto", "factored", "einsum", "loop")
CONV_FORMS: tuple[str, ...] = ("auto", "bmm", "grouped", "loop")
# what set_auto_form_override accepts besides None (measure)
AUTO_OVERRIDES: tuple[str, ...] = ("static", "bmm", "grouped", "loop")


_PRELU_INIT = 0.25


class TabularEmbedding(nn.Module):
    """The paper's tabular embedding: ``Linear -> BatchNorm1d -> PReLU``.

    Shapes: ``t [B, n_features] -> e [B, emb_dim]``.
    """

    def __init__(self, n_features: int, emb_dim: int) -> None:
        super().__init__()
        self.linear = nn.Linear(n_features, emb_dim)
        self.norm = nn.BatchNorm1d(emb_dim)
        self.act = nn.PReLU(init=_PRELU_INIT)
        self.emb_dim = emb_dim

    @property
    def second_moment(self) -> float:
        """E[e^2] at initialisation: BN makes the pre-activation ~N(0, 1) and
        PReLU with slope ``a`` keeps ``(1 + a^2) / 2`` of its second moment."""
        weight = self.act.weight.detach()
        # a network built on the meta device (to size it, nn.footprint) has no values
        a = _PRELU_INIT if weight.is_meta else float(weight.mean())
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


# -- form="auto": measured once per layer signature -----------------------------


@dataclass(frozen=True)
class AutoFormChoice:
    """One measured choice of ``form="auto"``.

    Attributes:
        device: the device the layer ran on, e.g. ``"cpu"`` or ``"cuda:0"``.
        signature: ``(dtype, in, out, kernel, stride, padding, input D-H-W,
            batch bucket)`` the choice applies to; the buckets are 1, 2, 4
            and 8 (8 or more samples).
        form: the fastest form, the one ``auto`` now runs.
        times_ms: best time of each form measured, in milliseconds.
    """

    device: str
    signature: tuple[Any, ...]
    form: str
    times_ms: dict[str, float]


_AUTO_CHOICES: dict[tuple[Any, ...], AutoFormChoice] = {}
_AUTO_LOCK = threading.Lock()
_AUTO_OVERRIDE: str | None = None
# each form: one warm-up run, then this many timed runs (best kept)
_AUTO_REPEATS = 2
# batches are bucketed by powers of two up to this; larger ones share the
# last bucket and are timed on this many samples, so that measuring costs a
# few passes over 8 samples at most (per-sample cost is flat from there on)
_AUTO_MAX_BUCKET = 8


def auto_form_choices() -> list[AutoFormChoice]:
    """The forms ``auto`` has chosen in this process so far, by measurement.

    Returns:
        One :class:`AutoFormChoice` per (device, layer signature), in the
        order they were measured.
    """
    with _AUTO_LOCK:
        return list(_AUTO_CHOICES.values())


def clear_auto_forms() -> None:
    """Forget every measured choice; the next forward of each layer measures again."""
    with _AUTO_LOCK:
        _AUTO_CHOICES.clear()


def set_auto_form_override(policy: str | None) -> str | None:
    """Make ``form="auto"`` deterministic, or measured again.

    Args:
        policy: ``None`` to measure (the default); ``"static"`` for the fixed
            rule (``bmm`` for an unpadded 1x1x1 kernel, else ``grouped``); or
            a form name, used wherever it applies (``"bmm"`` falls back to the
            fixed rule on other kernels).

    Returns:
        The previous policy, so that a caller can restore it.
    """
    global _AUTO_OVERRIDE
    if policy is not None and policy not in AUTO_OVERRIDES:
        raise ValueError(f"unknown auto-form override {policy!r}; choose None or one of {AUTO_OVERRIDES}")
    previous, _AUTO_OVERRIDE = _AUTO_OVERRIDE, policy
    return previous


@contextmanager
def auto_form_override(policy: str | None) -> Iterator[None]:
    """:func:`set_auto_form_override` for the duration of a ``with`` block.

    Args:
        policy: as for :func:`set_auto_form_override`.
    """
    previous = set_auto_form_override(policy)
    try:
        yield
    finally:
        set_auto_form_override(previous)


def _batch_bucket(batch: int) -> int:
    """The largest power of two <= batch, at most 8: batches of similar size share a choice."""
    return min(1 << (max(batch, 1).bit_length() - 1), _AUTO_MAX_BUCKET)


def _autocast_on(device_type: str) -> bool:
    try:
        return bool(torch.is_autocast_enabled(device_type))
    except TypeError:  # older PyTorch: no device argument
        return bool(torch.is_autocast_enabled())


def _is_compiling() -> bool:
    compiler = getattr(torch, "compiler", None)
    compiling = bool(compiler.is_compiling()) if compiler is not None and hasattr(compiler, "is_compiling") else False
    return compiling or torch.jit.is_scripting() or torch.jit.is_tracing()


def _time_once_ms(fn: Any, device: torch.device) -> float:
    """Milliseconds of one call of ``fn``; CUDA work is waited for."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return (time.perf_counter() - start) * 1e3


def _fastest(runs: dict[str, Any], device: torch.device, default: str) -> tuple[str, dict[str, float]]:
    """Time each candidate: one warm-up round, then ``_AUTO_REPEATS``
    interleaved rounds (so a burst of load hits every form alike), best of
    each kept. A form 3x slower than the best on its warm-up is not
    repeated. ``default`` is kept unless another is 10 % faster: timing
    noise should not flip the choice.

    Returns:
        ``(chosen form, {form: best ms})``.
    """
    warm = {form: _time_once_ms(fn, device) for form, fn in runs.items()}
    best = dict(warm)
    contenders = [f for f in runs if warm[f] < 3 * min(warm.values())]
    for _ in range(_AUTO_REPEATS):
        for form in contenders:
            best[form] = min(best[form], _time_once_ms(runs[form], device))
    fastest = min(best, key=best.__getitem__)
    chosen = default if best[default] <= 1.1 * best[fastest] else fastest
    return chosen, {form: round(ms, 4) for form, ms in best.items()}


class _HyperBase(nn.Module):
    """Shared generator plumbing for hyper layers."""

    weight_shape: tuple[int, ...]

    def _make_generators(self, emb_dim: int, fan_in: int, n_out: int, bias: bool, var_in: float) -> None:
        n_weights = math.prod(self.weight_shape)
        self.emb_dim = emb_dim
        self.fan_in = fan_in
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
    - ``"auto"``: the fastest of the above on this device for this layer,
      input size and batch bucket, measured at first use (a few forward
      passes of this layer on the input it was given; see
      :func:`auto_form_choices`). On a CPU the per-sample ``loop`` can beat
      the grouped convolution for 3x3x3 kernels, which is why this is not a
      fixed rule. :func:`auto_form_override` pins it (tests, benchmarks).
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

    def _static_form(self) -> str:
        return "bmm" if self.kernel_size == 1 and self.padding == 0 else "grouped"

    def _forms(self) -> tuple[str, ...]:
        """The forms that can compute this layer, the fixed rule's first."""
        if self._static_form() == "bmm":
            return ("bmm", "grouped", "loop")
        return ("grouped", "loop")

    def _auto_key(self, x: torch.Tensor) -> tuple[Any, ...]:
        signature = (
            str(x.dtype).replace("torch.", "") + ("+autocast" if _autocast_on(x.device.type) else ""),
            self.in_channels,
            self.out_channels,
            self.kernel_size,
            self.stride,
            self.padding,
            tuple(x.shape[2:]),
            _batch_bucket(x.shape[0]),
        )
        return (str(x.device), signature)

    def resolved_form(self, x: torch.Tensor | None = None) -> str:
        """The form a forward pass runs.

        Args:
            x: the input about to be convolved. With ``form="auto"`` and no
                choice yet for its (device, signature), the forms are measured
                on it now. Without ``x``: the choice of this layer's latest
                forward, else the fixed rule's guess.

        Returns:
            ``"bmm"``, ``"grouped"`` or ``"loop"``.
        """
        if self.form != "auto":
            return self.form
        if _AUTO_OVERRIDE is not None:
            forced = _AUTO_OVERRIDE
            return forced if forced in self._forms() else self._static_form()
        if x is None:
            return getattr(self, "_last_auto", None) or self._static_form()
        if _is_compiling() or x.is_meta:  # nothing to time on the meta device (nn.footprint)
            return self._static_form()
        key = self._auto_key(x)
        choice = _AUTO_CHOICES.get(key)
        if choice is None:
            choice = self._measure(x, key)
        self._last_auto = choice.form
        return choice.form

    @torch.no_grad()
    def _measure(self, x: torch.Tensor, key: tuple[Any, ...]) -> AutoFormChoice:
        """Time every applicable form on (a bucket-sized slice of) ``x``."""
        bucket = key[1][-1]
        xs = x[:bucket].detach()
        e = torch.zeros(bucket, self.emb_dim, device=x.device, dtype=self.weight_gen.weight.dtype)
        w, b = self.generate(e)  # the values do not matter for timing, the shapes do
        w, b = w.to(xs.dtype), None if b is None else b.to(xs.dtype)
        runs = {form: (lambda f=form: self._run_form(f, xs, w, b)) for form in self._forms()}
        chosen, times = _fastest(runs, x.device, self._static_form())
        choice = AutoFormChoice(device=key[0], signature=key[1], form=chosen, times_ms=times)
        with _AUTO_LOCK:
            # another thread may have measured the same key meanwhile: keep one
            return _AUTO_CHOICES.setdefault(key, choice)

    def _run_form(self, form: str, x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None) -> torch.Tensor:
        """The convolution of ``x [B, ...]`` with per-sample ``w [B, ...]``, ``b [B, out]``."""
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

    def forward(self, x: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
        if x.dim() != 5:
            raise ValueError(f"expected x [B, C, D, H, W], got {tuple(x.shape)}")
        if x.shape[0] != e.shape[0]:
            raise ValueError(f"batch mismatch: x {x.shape[0]} vs e {e.shape[0]}")
        form = self.resolved_form(x)
        w, b = self.generate(e)
        return self._run_form(form, x, w, b)


# -- hyperfan-in again, on the embedding as trained ------------------------------


def _hyper_layers(net: nn.Module) -> dict[str, _HyperBase]:
    return {name: m for name, m in net.named_modules() if isinstance(m, _HyperBase)}


@torch.no_grad()
def _embed_rows(net: nn.Module, tabular: torch.Tensor, train_mode: bool) -> torch.Tensor:
    """The embedding of ``tabular``: in training mode (batch statistics, as
    the hyper layers see it while training) on a copy, so that no running
    statistic moves; or in eval mode (running statistics)."""
    embedding = getattr(net, "embedding", None)
    if embedding is None:
        raise ValueError("this network has no tabular embedding feeding hyper layers")
    if tabular.dim() != 2 or tabular.shape[0] < 2:
        raise ValueError(f"need tabular rows [N >= 2, features], got {tuple(tabular.shape)}")
    probe = copy.deepcopy(embedding).train(train_mode)
    param = next(probe.parameters())
    return probe(tabular.to(device=param.device, dtype=param.dtype))


def _moments(e: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(E[e e^T] [emb, emb], E[e] [emb])`` over the rows, in float64."""
    e = e.double()
    return e.t() @ e / e.shape[0], e.mean(0)


def _generated_second_moment(gen: nn.Linear, m2: torch.Tensor, mean: torch.Tensor, with_bias: bool = True) -> float:
    """Mean over rows and outputs of ``(A e + c)^2``, without materialising
    the per-row outputs: ``(tr(A^T A E[ee^T]) + 2 c^T A E[e] + c^T c) / n``."""
    a = gen.weight.double()
    value = ((a.t() @ a) * m2).sum()
    if with_bias and gen.bias is not None:
        c = gen.bias.double()
        value = value + 2 * c @ (a @ mean) + c @ c
    return float(value) / a.shape[0]


def _layer_ratios(layer: _HyperBase, m2: torch.Tensor, mean: torch.Tensor) -> tuple[float, float | None]:
    """Generated ``(E[W^2] * fan_in, E[b^2])``: 1 each on the hyperfan-in target."""
    weight = _generated_second_moment(layer.weight_gen, m2, mean) * layer.fan_in
    bias = None if layer.bias_gen is None else _generated_second_moment(layer.bias_gen, m2, mean)
    return weight, bias


@torch.no_grad()
def generated_variance_ratios(
    net: nn.Module, tabular: torch.Tensor, train_mode: bool = True
) -> dict[str, dict[str, float]]:
    """How far each hyper layer's generated parameters are from the
    hyperfan-in target, on given tabular rows.

    Args:
        net: a network with an ``embedding`` module and hyper layers (a
            :class:`~napari_hyperfusion.nn.base.FusionNet`).
        tabular: encoded tabular rows ``[N, tabular_dim]``, e.g. the training rows.
        train_mode: embed with batch statistics over ``tabular`` (as in
            training; default) or with the running ones (eval mode).

    Returns:
        ``{layer name: {"weight": E[W^2] * fan_in, "bias": E[b^2]}}`` (second
        moments over rows and entries; 1.0 is on target). ``"bias"`` is left
        out for layers without a generated bias.
    """
    m2, mean = _moments(_embed_rows(net, tabular, train_mode))
    out = {}
    for name, layer in _hyper_layers(net).items():
        weight, bias = _layer_ratios(layer, m2, mean)
        out[name] = {"weight": weight} if bias is None else {"weight": weight, "bias": bias}
    return out


@torch.no_grad()
def rescale_generators(
    net: nn.Module, tabular: torch.Tensor, realised: bool = True, train_mode: bool = True
) -> dict[str, Any]:
    """Re-apply hyperfan-in to every hyper layer's generators for the
    embedding as it is now (typically after tabular pretraining), in place.

    ``var_in`` is measured as the second moment of the embedding's output on
    ``tabular``, and each generator matrix ``A`` is scaled so that
    ``A e`` has the hyperfan-in second moment on those rows: ``1 / fan_in``
    for weights, 1 for biases. That is what redrawing ``A`` with variance
    ``1 / (fan_in * emb_dim * var_in)`` gives in expectation; scaling the
    realised draw instead hits it without the draw's sampling error (about
    10 % for a bias generator with a few dozen outputs when the embedding's
    dimensions carry unequal energy, as they do after pretraining) and keeps
    any training the generators had. The generators' own biases ``c`` are
    left as they are (zero at init).

    Args:
        net: a network with an ``embedding`` module and hyper layers (a
            :class:`~napari_hyperfusion.nn.base.FusionNet`).
        tabular: encoded tabular rows ``[N, tabular_dim]``, e.g. the training rows.
        realised: scale to the realised second moment on the rows (default);
            False: scale ``A``'s entries to the textbook hyperfan-in variance
            ``1 / (fan_in * emb_dim * var_in)`` (``1 / (emb_dim * var_in)``
            for the bias generator), on target in expectation only.
        train_mode: embed with batch statistics over ``tabular``, as the
            hyper layers see the embedding while training (default; no
            running statistic is updated), or in eval mode.

    Returns:
        ``{"var_in": measured E[e^2], "layers": {name: {"weight_before",
        "weight_after", "bias_before", "bias_after", "scale"}}}`` where the
        ratios are ``E[W^2] * fan_in`` and ``E[b^2]`` on ``tabular`` (1.0 is
        the hyperfan-in target) and ``scale`` is the factor applied to the
        weight generator.
    """
    layers = _hyper_layers(net)
    if not layers:
        raise ValueError("this network has no hyper layers to rescale")
    m2, mean = _moments(_embed_rows(net, tabular, train_mode))
    var_in = float(torch.diagonal(m2).mean())
    if not math.isfinite(var_in) or var_in <= 0:
        raise ValueError(f"the embedding's second moment is {var_in}; cannot rescale to it")
    report: dict[str, Any] = {"var_in": var_in, "layers": {}}
    for name, layer in layers.items():
        w_before, b_before = _layer_ratios(layer, m2, mean)
        gens = [(layer.weight_gen, 1.0 / layer.fan_in)]
        if layer.bias_gen is not None:
            gens.append((layer.bias_gen, 1.0))
        scales = []
        for gen, target in gens:
            if realised:
                current = _generated_second_moment(gen, m2, mean, with_bias=False)
            else:  # per-entry: target / (emb_dim * var_in) is hyperfan-in's entry variance
                current = float(gen.weight.double().square().mean()) * layer.emb_dim * var_in
            scales.append(math.sqrt(target / max(current, 1e-30)))
            gen.weight.mul_(scales[-1])
        scale = scales[0]
        w_after, b_after = _layer_ratios(layer, m2, mean)
        entry = {"weight_before": w_before, "weight_after": w_after, "scale": scale}
        if b_before is not None:
            entry.update(bias_before=b_before, bias_after=b_after)
        report["layers"][name] = entry
    return report
