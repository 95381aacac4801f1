"""What a model configuration costs, measured before anything is allocated.

A model file's metadata says how large a network to build. A crafted (or
mistaken) file can ask for a network of many gigabytes while holding a
megabyte of weights; building it first and comparing shapes afterwards would
already have spent the memory. :func:`estimate_footprint` builds the network
on PyTorch's ``meta`` device (shapes only, no storage) and runs one forward
pass there, so the parameter count and the activation memory of one subject
are known exactly and for free. :func:`check_footprint` refuses a config
above :class:`ResourceLimits`.

Example:
    >>> from napari_hyperfusion.nn.config import paper_ad_config
    >>> fp = estimate_footprint(paper_ad_config())
    >>> fp.parameters > 1_000_000
    True
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch

from ..errors import ConfigError
from .build import build_model
from .config import ModelConfig

__all__ = ["Footprint", "ResourceLimits", "estimate_footprint", "check_footprint", "LIMIT_ENV"]

# the environment variable that raises (or lowers) the default memory limit, in MiB
LIMIT_ENV = "NAPARI_HYPERFUSION_MAX_MODEL_MB"
_DEFAULT_LIMIT_MB = 4096
_BYTES_PER_VALUE = 4  # float32: the dtype every network is built and run in


@dataclass(frozen=True)
class Footprint:
    """Sizes a config implies.

    Attributes:
        parameters: number of learnable values (and buffers), exactly as built.
        activation_values: values of every layer output for one subject and
            one view (the sum over layers: an upper bound for inference,
            which frees them as it goes; about what training keeps).
    """

    parameters: int
    activation_values: int

    @property
    def parameter_mb(self) -> float:
        return self.parameters * _BYTES_PER_VALUE / 2**20

    @property
    def activation_mb(self) -> float:
        return self.activation_values * _BYTES_PER_VALUE / 2**20

    @property
    def load_mb(self) -> float:
        """Memory to open the file and predict one subject: the weights twice
        (file tensors and network, while copying) plus one subject's
        activations."""
        return 2 * self.parameter_mb + self.activation_mb


@dataclass(frozen=True)
class ResourceLimits:
    """The most a model file may ask for. ``max_mb`` bounds
    :attr:`Footprint.load_mb`; its default is 4096 MiB, or the value of the
    environment variable ``NAPARI_HYPERFUSION_MAX_MODEL_MB``."""

    max_mb: float = 0.0

    def __post_init__(self) -> None:
        if not self.max_mb:
            raw = os.environ.get(LIMIT_ENV, "")
            try:
                value = float(raw) if raw else _DEFAULT_LIMIT_MB
            except ValueError:
                raise ConfigError(f"{LIMIT_ENV}={raw!r} is not a number of MiB") from None
            object.__setattr__(self, "max_mb", value)
        if not self.max_mb > 0:
            raise ConfigError(f"the model memory limit must be positive, got {self.max_mb} MiB")


def estimate_footprint(config: ModelConfig) -> Footprint:
    """Parameter count and activation size of ``config``'s network.

    Args:
        config: a validated model configuration.

    Returns:
        A :class:`Footprint`. Nothing is allocated: the network is built and
        run on the ``meta`` device (about 20 ms).

    Raises:
        ConfigError: sizes that no layer can be built with.
    """
    try:
        with torch.device("meta"):
            net = build_model(config)
    except (TypeError, ValueError, OverflowError, RuntimeError) as err:  # sizes no layer can take
        raise ConfigError(f"this architecture cannot be built ({type(err).__name__}: {str(err)[:200]})") from None
    parameters = sum(t.numel() for t in net.parameters()) + sum(t.numel() for t in net.buffers())
    _stand_in_for_shape_keeping_layers(net)
    total = [0]

    def count(_module, _inputs, output) -> None:
        if isinstance(output, torch.Tensor):
            total[0] += output.numel()

    hooks = [m.register_forward_hook(count) for m in net.modules() if not any(True for _ in m.children())]
    try:
        net.eval()
        image = torch.empty((1, config.in_channels, *config.input_shape), device="meta")
        tabular = torch.empty((1, config.input_dim), device="meta")
        with torch.no_grad():
            net(image if config.uses_image else None, tabular)
    finally:
        for hook in hooks:
            hook.remove()
    return Footprint(parameters=int(parameters), activation_values=int(total[0]))


class _SameShape(torch.nn.Module):
    """A normalisation or activation layer's output shape without its arithmetic."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


_SHAPE_KEEPING = (
    torch.nn.modules.batchnorm._BatchNorm,
    torch.nn.GroupNorm,
    torch.nn.ReLU,
    torch.nn.PReLU,
    torch.nn.LeakyReLU,
    torch.nn.ELU,
    torch.nn.GELU,
    torch.nn.SiLU,
    torch.nn.Sigmoid,
    torch.nn.Tanh,
)


def _stand_in_for_shape_keeping_layers(net: torch.nn.Module) -> None:
    """Replace norms and activations (output shaped as input) in a meta
    network: on ``meta`` torch runs them through its Python decompositions,
    whose first use imports torch's compiler (2 s of every command's
    start-up, for layers whose output size is their input's)."""
    for module in list(net.modules()):
        for name, child in list(module.named_children()):
            if isinstance(child, _SHAPE_KEEPING):
                setattr(module, name, _SameShape())


def check_footprint(config: ModelConfig, limits: ResourceLimits | None = None) -> Footprint:
    """:func:`estimate_footprint`, refused above ``limits``.

    Raises:
        ConfigError: the config needs more than ``limits.max_mb``; the
            message gives the sizes and the variable that raises the limit.
    """
    limits = limits or ResourceLimits()
    footprint = estimate_footprint(config)
    if footprint.load_mb > limits.max_mb:
        raise ConfigError(
            f"this architecture needs about {footprint.load_mb:,.0f} MiB to load and run one subject "
            f"({footprint.parameters:,} parameters, {footprint.activation_mb:,.0f} MiB of activations), above "
            f"the limit of {limits.max_mb:,.0f} MiB; if you trust the file, raise the limit with {LIMIT_ENV}"
        )
    return footprint
