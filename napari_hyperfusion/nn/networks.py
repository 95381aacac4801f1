"""HyperFusion networks and the paper's baselines, built from a ModelConfig.

Every network is a :class:`~napari_hyperfusion.nn.base.FusionNet`, split
into ``encode_image`` (all that does not depend on the EHR) and ``decode``
(see :mod:`napari_hyperfusion.nn.base`). For the paper's AD model only block 4's shortcut is generated, so
``encode_image`` runs the whole backbone including block 4's main path and
``decode`` is the 1x1x1 generated shortcut, the sum, pooling and the head.

Shapes: ``image [B, C, D, H, W]`` (float, the model grid of
``config.input_shape``), ``tabular [B, config.tabular_dim]`` (the schema's
encoding), output ``[B, n_outputs]`` (logits, or years for regression).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .base import Features, FusionNet, apply_layer
from .config import ModelConfig
from .hyper import HyperConv3d, HyperLinear

__all__ = ["PreActResNetFusion", "BrainAgeFusion", "Modulation", "MLPHead"]


class Modulation(nn.Module):
    """FiLM (Perez et al. 2018) or DAFT (Wolf et al. 2022): a per-channel
    affine ``F -> (1 + scale) * F + shift`` whose scale and shift come from a
    bottleneck MLP on the tabular vector (FiLM) or on ``[GAP(F), tabular]``
    (DAFT). The last layer starts at zero, so the block starts unmodulated.

    Shapes: ``fmap [B, C, D, H, W], t [B, T] -> [B, C, D, H, W]``.
    """

    def __init__(self, kind: str, channels: int, tabular_dim: int, hidden: int) -> None:
        super().__init__()
        self.kind = kind
        in_dim = tabular_dim + (channels if kind == "daft" else 0)
        self.mlp = nn.Sequential(nn.Linear(in_dim, hidden), nn.ReLU(), nn.Linear(hidden, 2 * channels))
        nn.init.zeros_(self.mlp[2].weight)
        nn.init.zeros_(self.mlp[2].bias)

    def scale_shift(self, fmap: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The generated per-channel ``(scale, shift)``, each ``[B, C]``."""
        z = t if self.kind == "film" else torch.cat([fmap.mean(dim=(2, 3, 4)), t], 1)
        scale, shift = self.mlp(z).chunk(2, dim=1)
        return scale, shift

    def forward(self, fmap: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        scale, shift = self.scale_shift(fmap, t)
        view = (*scale.shape, 1, 1, 1)
        return fmap * (1 + scale.view(view)) + shift.view(view)


class PreActBlock(nn.Module):
    """Pre-activation residual block (He et al. 2016) with optional generated
    convolutions and optional FiLM/DAFT modulation of its normalised input.

    ``encode`` computes every branch that does not need the EHR; ``decode``
    finishes the block. Shapes: ``[B, C_in, D, H, W] -> [B, C_out, D/s, H/s, W/s]``.
    """

    def __init__(
        self,
        cin: int,
        cout: int,
        stride: int,
        dropout: float,
        hyper: set[str],
        emb_dim: int,
        var_in: float,
        form: str,
        modulation: Modulation | None = None,
    ) -> None:
        super().__init__()
        self.hyper = set(hyper)
        self.bn1 = nn.BatchNorm3d(cin)
        self.bn2 = nn.BatchNorm3d(cout)
        self.drop = nn.Dropout(dropout)
        self.modulation = modulation

        def conv(name: str, ci: int, co: int, k: int, s: int, p: int) -> nn.Module:
            if name in self.hyper:
                return HyperConv3d(ci, co, k, emb_dim, stride=s, padding=p, var_in=var_in, form=form)
            return nn.Conv3d(ci, co, k, stride=s, padding=p, bias=False)

        self.conv1 = conv("conv1", cin, cout, 3, stride, 1)
        self.conv2 = conv("conv2", cout, cout, 3, 1, 1)
        self.identity_shortcut = stride == 1 and cin == cout
        if self.identity_shortcut and "shortcut" in self.hyper:
            raise ValueError("a block with an identity shortcut has no shortcut layer to generate")
        self.shortcut = None if self.identity_shortcut else conv("shortcut", cin, cout, 1, stride, 0)

    @property
    def depends_on_tabular(self) -> bool:
        return bool(self.hyper) or self.modulation is not None

    def encode(self, x: torch.Tensor) -> Features:
        if self.modulation is not None:
            return {"x": x}
        a = F.relu(self.bn1(x))
        cache: Features = {}
        if "conv1" in self.hyper or "shortcut" in self.hyper:
            cache["a"] = a
        if "shortcut" not in self.hyper:
            cache["s"] = x if self.shortcut is None else self.shortcut(a)
        if "conv1" not in self.hyper:
            h = self.drop(F.relu(self.bn2(self.conv1(a))))
            if "conv2" in self.hyper:
                cache["h"] = h
            else:
                cache["m"] = self.conv2(h)
        return cache

    def decode(self, cache: Features, e: torch.Tensor | None, t: torch.Tensor | None) -> torch.Tensor:
        if "x" in cache:  # modulated: the whole block depends on the EHR
            x = cache["x"]
            a = F.relu(self.modulation(self.bn1(x), t))  # type: ignore[misc]
            s = x if self.shortcut is None else apply_layer(self.shortcut, a, e)
        else:
            a = cache.get("a")
            s = cache["s"] if "s" in cache else apply_layer(self.shortcut, a, e)  # type: ignore[arg-type]
        if "m" in cache:
            return cache["m"] + s
        h = cache["h"] if "h" in cache else self.drop(F.relu(self.bn2(apply_layer(self.conv1, a, e))))
        return apply_layer(self.conv2, h, e) + s

    def forward(self, x: torch.Tensor, e: torch.Tensor | None = None, t: torch.Tensor | None = None) -> torch.Tensor:
        return self.decode(self.encode(x), e, t)


class MLPHead(nn.Module):
    """Linear layers with ReLU and dropout between them; any layer may be a
    :class:`HyperLinear`. Shapes: ``[B, dims[0]] -> [B, dims[-1]]``."""

    def __init__(
        self, dims: list[int], hyper: list[bool], dropout: float, emb_dim: int, var_in: float, form: str
    ) -> None:
        super().__init__()
        layers = []
        for d_in, d_out, is_hyper in zip(dims[:-1], dims[1:], hyper):
            layers.append(
                HyperLinear(d_in, d_out, emb_dim, var_in=var_in, form=form) if is_hyper else nn.Linear(d_in, d_out)
            )
        self.layers = nn.ModuleList(layers)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, e: torch.Tensor | None) -> torch.Tensor:
        for i, layer in enumerate(self.layers):
            x = apply_layer(layer, x, e)
            if i < len(self.layers) - 1:
                x = self.drop(F.relu(x))
        return x


class PreActResNetFusion(FusionNet):
    """The AD classifier: a pre-activation 3D ResNet (stem conv + max-pool,
    four blocks taking ``f`` base filters to 2f, 4f, 8f and 16f, global
    average pooling, MLP head) with HyperFusion or one of the baselines."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__(config)
        c, f = config, config.base_filters
        if self.tabular_only:
            return
        self.stem = nn.Sequential(
            nn.Conv3d(c.in_channels, f, 3, padding=1, bias=False), nn.MaxPool3d(3, stride=2, padding=1)
        )
        widths = [f, 2 * f, 4 * f, 8 * f, 16 * f]
        strides = [1, 2, 2, 2]
        blocks = []
        for i in range(4):
            name = f"block{i + 1}"
            hyper = {s.split(".")[1] for s in c.hyper_sites if s.startswith(name + ".")}
            modulation = None
            if c.fusion in ("film", "daft") and i == 3:
                modulation = Modulation(c.fusion, widths[i], c.tabular_dim, c.modulation_hidden)
            blocks.append(
                PreActBlock(
                    widths[i],
                    widths[i + 1],
                    strides[i],
                    c.dropout,
                    hyper,
                    c.emb_dim,
                    self._var_in,
                    c.hyper_form,
                    modulation,
                )
            )
        self.blocks = nn.ModuleList(blocks)
        self.final_norm = nn.BatchNorm3d(widths[-1])
        first = [i for i, b in enumerate(self.blocks) if b.depends_on_tabular]
        self.first_tabular_block = first[0] if first else None
        head_in = widths[-1] + (c.tabular_dim if c.fusion == "concat" else 0)
        self.head = MLPHead(
            [head_in, c.head_hidden, c.n_outputs],
            ["fc1" in c.hyper_sites, "fc2" in c.hyper_sites],
            c.dropout,
            c.emb_dim,
            self._var_in,
            c.hyper_form,
        )

    def _pool(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.final_norm(x)).mean(dim=(2, 3, 4))

    def _encode(self, image: torch.Tensor) -> Features:
        x = self.stem(image)
        for i, block in enumerate(self.blocks):
            if i == self.first_tabular_block:
                return block.encode(x)
            x = block(x)
        return {"pooled": self._pool(x)}

    def _decode(self, features: Features, tabular: torch.Tensor) -> torch.Tensor:
        e = self.embed(tabular)
        if self.first_tabular_block is None:
            pooled = features["pooled"]
        else:
            k = self.first_tabular_block
            x = self.blocks[k].decode(features, e, tabular)
            for block in self.blocks[k + 1 :]:
                x = block(x, e, tabular)
            pooled = self._pool(x)
        if self.config.fusion == "concat":
            pooled = torch.cat([pooled, tabular], 1)
        return self.head(pooled, e)


class BrainAgeFusion(FusionNet):
    """The brain-age regressor: three stages of
    ``[conv3-ReLU-conv3-ReLU-maxpool2-BN]`` (1x, 2x, 4x base filters),
    dropout, flatten, and four FC layers ``flat -> 16 -> 32 -> 64 -> 1``,
    all generated from the sex embedding in HyperFusion."""

    head_dims = (16, 32, 64)

    def __init__(self, config: ModelConfig) -> None:
        super().__init__(config)
        c, f = config, config.base_filters
        if self.tabular_only:
            return
        layers: list[nn.Module] = []
        cin = c.in_channels
        for width in (f, 2 * f, 4 * f):
            layers += [
                nn.Conv3d(cin, width, 3, padding=1), nn.ReLU(),
                nn.Conv3d(width, width, 3, padding=1), nn.ReLU(),
                nn.MaxPool3d(2), nn.BatchNorm3d(width),
            ]  # fmt: skip
            cin = width
        self.trunk = nn.Sequential(*layers, nn.Dropout(c.dropout))
        spatial = [s // 8 for s in c.input_shape]
        flat = cin * spatial[0] * spatial[1] * spatial[2]
        head_in = flat + (c.tabular_dim if c.fusion == "concat" else 0)
        dims = [head_in, *self.head_dims, c.n_outputs]
        hyper = [f"fc{i + 1}" in c.hyper_sites for i in range(len(dims) - 1)]
        self.head = MLPHead(dims, hyper, c.dropout, c.emb_dim, self._var_in, c.hyper_form)

    def _encode(self, image: torch.Tensor) -> Features:
        return {"flat": self.trunk(image).flatten(1)}

    def _decode(self, features: Features, tabular: torch.Tensor) -> torch.Tensor:
        e = self.embed(tabular)
        x = features["flat"]
        if self.config.fusion == "concat":
            x = torch.cat([x, tabular], 1)
        return self.head(x, e)
