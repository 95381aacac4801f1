"""The base of every network: the encode/decode split and the tabular
embedding that feeds the hypernetworks.

    features = net.encode_image(image)      # all that does not depend on EHR
    output   = net.decode(features, tabular)
    net(image, tabular) == net.decode(net.encode_image(image), tabular)

``features`` is a ``dict`` of tensors with a leading batch axis. ``decode``
broadcasts features of batch 1 against a tabular batch of ``N`` rows, so one
cached scan can be decoded under many what-if records in a single call.
"""

from __future__ import annotations

import torch
from torch import nn

from .config import ModelConfig
from .hyper import FillEmbedding, HyperConv3d, HyperLinear, TabularEmbedding

__all__ = ["Features", "FusionNet", "HYPER_LAYERS", "apply_layer", "pool_features"]

Features = dict[str, torch.Tensor]
HYPER_LAYERS = (HyperConv3d, HyperLinear)


def apply_layer(layer: nn.Module, x: torch.Tensor, e: torch.Tensor | None) -> torch.Tensor:
    """Run ``layer`` on ``x``, passing the embedding ``e`` if it is a hyper layer."""
    return layer(x, e) if isinstance(layer, HYPER_LAYERS) else layer(x)


def pool_features(features: Features) -> torch.Tensor:
    """One vector per image from ``net.encode_image``'s output: each
    feature tensor averaged over its spatial axes (flattened if it has
    none), concatenated in key order. ``[B, F]``."""
    pooled = [f.float().reshape(f.shape[0], f.shape[1], -1).mean(-1) if f.dim() > 2 else f.float().reshape(f.shape[0], -1)
              for _, f in sorted(features.items())]  # fmt: skip
    return torch.cat(pooled, dim=1)


class FusionNet(nn.Module):
    """Base of every network: the encode/decode split and the embedding."""

    config: ModelConfig

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.embedding: nn.Module | None = None
        if config.fusion in ("hyperfusion", "tabular"):
            cls = TabularEmbedding if config.embedding == "mlp" else FillEmbedding
            self.embedding = cls(config.tabular_dim, config.emb_dim)
        # the tabular-only baseline is the paper's MLP: embedding -> linear
        self.tabular_only = config.fusion == "tabular"
        if self.tabular_only:
            self.head = nn.Linear(config.emb_dim, config.n_outputs)

    @property
    def _var_in(self) -> float:
        return self.embedding.second_moment if self.embedding is not None else 1.0

    def embed(self, tabular: torch.Tensor) -> torch.Tensor | None:
        """The hypernetwork's input embedding, ``[B, emb_dim]`` (or None)."""
        return None if self.embedding is None else self.embedding(tabular)

    def hyper_layers(self) -> dict[str, nn.Module]:
        """The generated layers by name, e.g. ``{"blocks.3.shortcut": ...}``."""
        return {n: m for n, m in self.named_modules() if isinstance(m, HYPER_LAYERS)}

    def encode_image(self, image: torch.Tensor | None) -> Features:
        """Everything that does not depend on the EHR (``{}`` for the
        tabular-only baseline, which ignores the image)."""
        if self.tabular_only:
            return {}
        self._check_image(image)
        return self._encode(image)  # type: ignore[arg-type]

    def _encode(self, image: torch.Tensor) -> Features:
        raise NotImplementedError

    def _decode(self, features: Features, tabular: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def decode(self, features: Features, tabular: torch.Tensor) -> torch.Tensor:
        """Finish the forward pass from cached image features.

        Features of batch 1 are broadcast to the tabular batch."""
        if tabular.dim() != 2 or tabular.shape[1] != self.config.input_dim:
            raise ValueError(f"tabular must be [B, {self.config.input_dim}], got {tuple(tabular.shape)}")
        n = tabular.shape[0]
        expanded = {}
        for key, value in features.items():
            if value.shape[0] == n:
                expanded[key] = value
            elif value.shape[0] == 1:
                expanded[key] = value.expand(n, *value.shape[1:])
            else:
                raise ValueError(f"features batch {value.shape[0]} does not match tabular batch {n}")
        out = self.head(self.embed(tabular)) if self.tabular_only else self._decode(expanded, tabular)
        if self.config.n_outputs == 1:
            out = out * self.config.output_scale + self.config.output_shift
        return out

    def forward(self, image: torch.Tensor | None, tabular: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode_image(image), tabular)

    def _check_image(self, image: torch.Tensor | None) -> None:
        if image is None:
            raise ValueError(f"this {self.config.fusion} model needs an image")
        expected = (self.config.in_channels, *self.config.input_shape)
        if image.dim() != 5 or tuple(image.shape[1:]) != expected:
            raise ValueError(f"image must be [B, {', '.join(map(str, expected))}], got {tuple(image.shape)}")
