"""HyperFusion networks and the paper's baselines, built from a ModelConfig.

Every network is a :class:`~napari_hyperfusion.nn.base.FusionNet`, split
into ``encode_image`` (all that does not depend on the EHR) and ``decode``
(see :mod:`napari_hyperfusion.nn.base`). For the paper's AD model only block 4's shortcut is generated, so
``encode_image`` runs the whole backbone including block 4's main path and
``decode`` is the 1x1x1 generated shortcut, the sum, pooling and the head.

The ResNet comes in two layouts (``ModelConfig.block_style``: ours, or the
HyperFusion authors' as in their public code) and FiLM/DAFT in three
(``ModelConfig.modulation_style``: ours, the authors' baseline block, or
ai-med's published DAFT block); the defaults build what this package always
built, so stored model files load unchanged.

Shapes: ``image [B, C, D, H, W]`` (float, the model grid of
``config.input_shape``), ``tabular [B, config.tabular_dim]`` (the schema's
encoding), output ``[B, n_outputs]`` (logits, or years for regression).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .base import Features, FusionNet, apply_layer
from .config import LEAKY_SLOPE, ModelConfig
from .hyper import HyperConv3d, HyperLinear

__all__ = ["PreActResNetFusion", "BrainAgeFusion", "Modulation", "MLPHead", "PreActBlock", "AiMedBlock"]


class Modulation(nn.Module):
    """FiLM (Perez et al. 2018) or DAFT (Wolf et al. 2022): a per-channel
    affine map of a feature map whose scale and shift come from a bottleneck
    MLP on the tabular vector (FiLM) or on ``[GAP(F), tabular]`` (DAFT).

    Styles (``ModelConfig.modulation_style``):

    - ``"ours"``: ``F -> (1 + scale) * F + shift``, MLP with biases, the last
      layer zero so the block starts unmodulated.
    - ``"paper"`` / ``"ai-med"``: ``F -> scale * F + shift`` as both public
      codes do (linear activation), bias-free MLP with PyTorch's default init.

    Shapes: ``fmap [B, C, D, H, W], t [B, T] -> [B, C, D, H, W]``.
    """

    def __init__(self, kind: str, channels: int, tabular_dim: int, hidden: int, style: str = "ours") -> None:
        super().__init__()
        self.kind = kind
        self.style = style
        bias = style == "ours"
        in_dim = tabular_dim + (channels if kind == "daft" else 0)
        self.mlp = nn.Sequential(
            nn.Linear(in_dim, hidden, bias=bias), nn.ReLU(), nn.Linear(hidden, 2 * channels, bias=bias)
        )
        if style == "ours":
            nn.init.zeros_(self.mlp[2].weight)
            nn.init.zeros_(self.mlp[2].bias)

    def scale_shift(self, fmap: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The MLP's per-channel ``(scale, shift)``, each ``[B, C]`` (for
        ``"ours"`` the map multiplies by ``1 + scale``)."""
        z = t if self.kind == "film" else torch.cat([fmap.mean(dim=(2, 3, 4)), t], 1)
        scale, shift = self.mlp(z).chunk(2, dim=1)
        return scale, shift

    def forward(self, fmap: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        scale, shift = self.scale_shift(fmap, t)
        view = (*scale.shape, 1, 1, 1)
        factor = 1 + scale if self.style == "ours" else scale
        return fmap * factor.view(view) + shift.view(view)


class PreActBlock(nn.Module):
    """Pre-activation residual block (He et al. 2016) with optional generated
    convolutions and optional FiLM/DAFT modulation.

    ``encode`` computes every branch that does not need the EHR; ``decode``
    finishes the block. Shapes: ``[B, C_in, D, H, W] -> [B, C_out, D/s, H/s, W/s]``.

    Args:
        cin, cout, stride: channels and stride.
        dropout: dropout rate.
        hyper: which of ``conv1``, ``conv2``, ``shortcut`` are generated.
        emb_dim, var_in, form: for the hyper layers.
        modulation: FiLM/DAFT of the block, or None.
        style: ``"ours"``: the shortcut reads ``relu(bn1(x))`` (modulated if
            modulated), dropout after ``relu(bn2(.))`` only, bias-free convs.
            ``"paper"`` (the HyperFusion authors' block): the shortcut reads
            the raw input ``x`` (plain: BN -> conv; generated: conv -> BN),
            channel dropout before both convs, convs with biases.
        modulate_input: the authors' FiLM/DAFT block: modulate ``x`` itself
            before ``bn1`` (the shortcut still reads the unmodulated ``x``);
            otherwise ``bn1(x)`` is modulated.
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
        style: str = "ours",
        modulate_input: bool = False,
    ) -> None:
        super().__init__()
        paper = style == "paper"
        self.hyper = set(hyper)
        self.style = style
        self.bn1 = nn.BatchNorm3d(cin)
        self.bn2 = nn.BatchNorm3d(cout)
        # the authors drop whole channels before each conv; we drop units after the first
        self.drop = nn.Dropout3d(dropout) if paper else nn.Dropout(dropout)
        self.drop_in = nn.Dropout3d(dropout) if paper else nn.Identity()
        self.modulation = modulation
        self.modulate_input = modulate_input

        def conv(name: str, ci: int, co: int, k: int, s: int, p: int) -> nn.Module:
            if name in self.hyper:
                return HyperConv3d(ci, co, k, emb_dim, stride=s, padding=p, var_in=var_in, form=form)
            return nn.Conv3d(ci, co, k, stride=s, padding=p, bias=paper)

        self.conv1 = conv("conv1", cin, cout, 3, stride, 1)
        self.conv2 = conv("conv2", cout, cout, 3, 1, 1)
        self.identity_shortcut = stride == 1 and cin == cout
        if self.identity_shortcut and "shortcut" in self.hyper:
            raise ValueError("a block with an identity shortcut has no shortcut layer to generate")
        self.shortcut = None if self.identity_shortcut else conv("shortcut", cin, cout, 1, stride, 0)
        self.shortcut_reads_input = paper
        self.shortcut_norm: nn.Module | None = None
        if paper and self.shortcut is not None:
            # the authors: BN -> conv on a plain shortcut, conv -> BN on a generated one
            self.shortcut_norm = nn.BatchNorm3d(cout if "shortcut" in self.hyper else cin)

    @property
    def depends_on_tabular(self) -> bool:
        return bool(self.hyper) or self.modulation is not None

    def _pre(self, x: torch.Tensor, t: torch.Tensor | None) -> torch.Tensor:
        """conv1's input: the pre-activated (and maybe modulated) ``x``."""
        if self.modulation is None:
            return self.drop_in(F.relu(self.bn1(x)))
        if self.modulate_input:
            return self.drop_in(F.relu(self.bn1(self.modulation(x, t))))
        return self.drop_in(F.relu(self.modulation(self.bn1(x), t)))

    def _mid(self, y: torch.Tensor) -> torch.Tensor:
        """conv2's input from conv1's output."""
        return self.drop(F.relu(self.bn2(y)))

    def _shortcut(self, x: torch.Tensor | None, a: torch.Tensor | None, e: torch.Tensor | None) -> torch.Tensor:
        if self.shortcut is None:
            return x  # type: ignore[return-value]
        if not self.shortcut_reads_input:
            return apply_layer(self.shortcut, a, e)  # type: ignore[arg-type]
        if isinstance(self.shortcut, HyperConv3d):
            return self.shortcut_norm(self.shortcut(x, e))  # type: ignore[misc]
        return self.shortcut(self.shortcut_norm(x))  # type: ignore[misc]

    def encode(self, x: torch.Tensor) -> Features:
        cache: Features = {}
        if self.modulation is not None:  # modulated: the main path depends on the EHR
            cache["x"] = x
            if self.shortcut_reads_input and "shortcut" not in self.hyper:
                cache["s"] = self._shortcut(x, None, None)
            return cache
        a = self._pre(x, None)
        if "shortcut" not in self.hyper:
            cache["s"] = self._shortcut(x, a, None)
        elif self.shortcut_reads_input:
            cache["xs"] = x  # the generated shortcut reads the raw input
        else:
            cache["a"] = a
        if "conv1" in self.hyper:
            cache["a"] = a
        else:
            h = self._mid(self.conv1(a))
            if "conv2" in self.hyper:
                cache["h"] = h
            else:
                cache["m"] = self.conv2(h)
        return cache

    def decode(self, cache: Features, e: torch.Tensor | None, t: torch.Tensor | None) -> torch.Tensor:
        if "x" in cache:
            x: torch.Tensor | None = cache["x"]
            a = self._pre(x, t)  # type: ignore[arg-type]
        else:
            x, a = cache.get("xs"), cache.get("a")
        s = cache["s"] if "s" in cache else self._shortcut(x, a, e)
        if "m" in cache:
            return cache["m"] + s
        h = cache["h"] if "h" in cache else self._mid(apply_layer(self.conv1, a, e))  # type: ignore[arg-type]
        return apply_layer(self.conv2, h, e) + s

    def modulation_input(self, cache: Features) -> torch.Tensor | None:
        """The feature map the modulation reads (DAFT pools it), from ``encode``'s cache."""
        x = cache.get("x")
        if x is None or self.modulation is None:
            return None
        return x if self.modulate_input else self.bn1(x)

    def forward(self, x: torch.Tensor, e: torch.Tensor | None = None, t: torch.Tensor | None = None) -> torch.Tensor:
        return self.decode(self.encode(x), e, t)


class AiMedBlock(nn.Module):
    """ai-med's published DAFT / FiLM block (Wolf et al. 2022,
    ``daft/networks/vol_blocks.py``) at the location of their ADNI runs
    (``--film_location 3``), in place of our block 4.

    A post-activation residual block: ``conv1 -> BN (non-affine) ->
    scale * F + shift -> ReLU -> conv2 -> BN``, plus the shortcut
    ``conv1x1 -> BN`` of the input, then ReLU. Convolutions and the MLP are
    bias-free; the bottleneck has ``int((C_in + T) / 7)`` units (their
    ``bottleneck_factor`` 7 over the DAFT block's input channels plus the
    tabular features). Shapes as :class:`PreActBlock`.
    """

    bottleneck_factor = 7.0

    def __init__(self, kind: str, cin: int, cout: int, stride: int, tabular_dim: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv3d(cin, cout, 3, stride=stride, padding=1, bias=False)
        # affine=False: the modulation's scale and shift take the BN's place
        self.bn1 = nn.BatchNorm3d(cout, affine=False)
        self.conv2 = nn.Conv3d(cout, cout, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm3d(cout)
        self.shortcut: nn.Module | None = None
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv3d(cin, cout, 1, stride=stride, bias=False), nn.BatchNorm3d(cout))
        hidden = max(1, int((cin + tabular_dim) / self.bottleneck_factor))
        self.modulation = Modulation(kind, cout, tabular_dim, hidden, style="ai-med")

    depends_on_tabular = True

    def encode(self, x: torch.Tensor) -> Features:
        # "x" holds conv1's output, so that bn1(cache["x"]) is the modulated map,
        # as for our block (the what-if reads DAFT's pooled input that way)
        return {"x": self.conv1(x), "s": x if self.shortcut is None else self.shortcut(x)}

    def decode(self, cache: Features, e: torch.Tensor | None, t: torch.Tensor | None) -> torch.Tensor:
        h = F.relu(self.modulation(self.bn1(cache["x"]), t))
        return F.relu(self.bn2(self.conv2(h)) + cache["s"])

    def modulation_input(self, cache: Features) -> torch.Tensor | None:
        """The feature map the modulation reads, from ``encode``'s cache."""
        return self.bn1(cache["x"])

    def forward(self, x: torch.Tensor, e: torch.Tensor | None = None, t: torch.Tensor | None = None) -> torch.Tensor:
        return self.decode(self.encode(x), e, t)


class MLPHead(nn.Module):
    """Linear layers with ReLU (or leaky ReLU) and dropout between them; any
    layer may be a :class:`HyperLinear`. Shapes: ``[B, dims[0]] -> [B, dims[-1]]``."""

    def __init__(
        self,
        dims: list[int],
        hyper: list[bool],
        dropout: float,
        emb_dim: int,
        var_in: float,
        form: str,
        activation: str = "relu",
    ) -> None:
        super().__init__()
        self.negative_slope = LEAKY_SLOPE if activation == "leaky_relu" else 0.0
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
                x = self.drop(F.leaky_relu(x, self.negative_slope) if self.negative_slope else F.relu(x))
        return x


class PreActResNetFusion(FusionNet):
    """The AD classifier: a pre-activation 3D ResNet (stem conv + max-pool,
    four blocks taking ``f`` base filters to 2f, 4f, 8f and 16f, global
    average pooling, MLP head) with HyperFusion or one of the baselines.

    ``config.block_style`` picks our layout or the authors' (see
    :class:`~napari_hyperfusion.nn.config.ModelConfig`); for FiLM/DAFT,
    ``config.modulation_style`` picks block 4.
    """

    # the authors' code: channel dropout per block, dropout on the pooled
    # features and before the last FC layer
    paper_block_dropout = (0.1, 0.2, 0.2, 0.3)
    paper_pooled_dropout = 0.6
    paper_head_dropout = 0.5

    def __init__(self, config: ModelConfig) -> None:
        super().__init__(config)
        c, f = config, config.base_filters
        if self.tabular_only:
            return
        paper = c.block_style == "paper"
        if paper:
            self.stem = nn.Sequential(
                nn.Conv3d(c.in_channels, f, 3, padding=1), nn.BatchNorm3d(f), nn.ReLU(), nn.MaxPool3d(2, stride=2)
            )
        else:
            self.stem = nn.Sequential(
                nn.Conv3d(c.in_channels, f, 3, padding=1, bias=False), nn.MaxPool3d(3, stride=2, padding=1)
            )
        widths = [f, 2 * f, 4 * f, 8 * f, 16 * f]
        strides = [1, 2, 2, 2]
        blocks: list[nn.Module] = []
        for i in range(4):
            name = f"block{i + 1}"
            hyper = {s.split(".")[1] for s in c.hyper_sites if s.startswith(name + ".")}
            dropout = self.paper_block_dropout[i] if paper else c.dropout
            if c.fusion in ("film", "daft") and i == 3 and c.modulation_style == "ai-med":
                blocks.append(AiMedBlock(c.fusion, widths[i], widths[i + 1], strides[i], c.tabular_dim))
                continue
            modulation, style, at_input = None, c.block_style, False
            if c.fusion in ("film", "daft") and i == 3:
                if c.modulation_style == "paper":
                    # the authors' baseline block: their layout, bottleneck 7, dropout 0.3
                    modulation = Modulation(c.fusion, widths[i], c.tabular_dim, 7, style="paper")
                    style, at_input, dropout = "paper", True, self.paper_block_dropout[3]
                else:
                    modulation = Modulation(c.fusion, widths[i], c.tabular_dim, c.modulation_hidden)
            blocks.append(
                PreActBlock(
                    widths[i],
                    widths[i + 1],
                    strides[i],
                    dropout,
                    hyper,
                    c.emb_dim,
                    self._var_in,
                    c.hyper_form,
                    modulation,
                    style=style,
                    modulate_input=at_input,
                )
            )
        self.blocks = nn.ModuleList(blocks)
        # the authors pool block 4's sum as it is; we normalise and activate it first
        self.final_norm = None if paper else nn.BatchNorm3d(widths[-1])
        self.pooled_drop = nn.Dropout(self.paper_pooled_dropout) if paper else nn.Identity()
        first = [i for i, b in enumerate(self.blocks) if b.depends_on_tabular]
        self.first_tabular_block = first[0] if first else None
        head_in = widths[-1] + (c.tabular_dim if c.fusion == "concat" else 0)
        self.head = MLPHead(
            [head_in, c.head_hidden, c.n_outputs],
            ["fc1" in c.hyper_sites, "fc2" in c.hyper_sites],
            self.paper_head_dropout if paper else c.dropout,
            c.emb_dim,
            self._var_in,
            c.hyper_form,
            c.head_activation,
        )

    def _pool(self, x: torch.Tensor) -> torch.Tensor:
        if self.final_norm is not None:
            x = F.relu(self.final_norm(x))
        return x.mean(dim=(2, 3, 4))

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
        # the authors drop pooled image features only, before the EHR joins them
        pooled = self.pooled_drop(pooled)
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
        self.head = MLPHead(dims, hyper, c.dropout, c.emb_dim, self._var_in, c.hyper_form, c.head_activation)

    def _encode(self, image: torch.Tensor) -> Features:
        return {"flat": self.trunk(image).flatten(1)}

    def _decode(self, features: Features, tabular: torch.Tensor) -> torch.Tensor:
        e = self.embed(tabular)
        x = features["flat"]
        if self.config.fusion == "concat":
            x = torch.cat([x, tabular], 1)
        return self.head(x, e)
