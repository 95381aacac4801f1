"""MedFusionNet in 3D: a DenseNet stream and a self-attention stream that
exchange information, a feature pyramid over their scales, and a label
decoder that fuses the image with the selected EHR fields and a note.

Our reading of the seed's description (no code or numbers are public),
sized for the hippocampus crops the HyperFusion AD models read::

    image [B, 1, D, H, W]
      CNN stream:  stem (conv, /2) -> dense block 1 (/2) -> transition (/4)
                   -> dense block 2 (/4) -> exchange 1 -> transition (/8)
                   -> dense block 3 (/8) -> exchange 2
      attention:   4x4x4 patches -> tokens (/4) -> self-attention layer 1
                   -> exchange 1 -> 2x2x2 token pooling (/8)
                   -> self-attention layer 2 -> exchange 2
      exchange:    tokens += Linear(CNN features at the token's place);
                   CNN features += Conv1x1(tokens put back on the grid)
      pyramid:     1x1 laterals of dense blocks 1-3, top-down sum, 3x3
                   smoothing; each level global-average-pooled
      image tokens: [B, 4, d] = pyramid levels /2, /4, /8 + pooled attention
    decode(image tokens, inputs):
      EHR token  = MLP(inputs[:, selected columns])   (stage 1's fields)
      note token = MLP(note embedding, presence flag) (if the model reads notes)
      one query per label attends to the labels (self-attention: label
      dependencies) and to the 4-6 modality tokens (cross-attention)
      -> one logit per label (sigmoid: labels are not exclusive)

Everything before ``decode`` is independent of the EHR and the note, so a
cached scan is decoded under any what-if record at the cost of the small
label decoder. The model generates no weights: EHR enter as a token.

Shapes: ``inputs [B, tabular_dim + note_dim]`` (the schema's encoding,
then the note's embedding and a 0/1 presence flag), output ``[B, L]``
logits. D, H and W must be multiples of 8.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .base import Features, FusionNet
from .config import ModelConfig

__all__ = ["MedFusionNet", "DenseBlock", "BranchExchange", "LabelDecoder"]


class DenseBlock(nn.Module):
    """DenseNet block (Huang et al. 2017): ``layers`` bottleneck layers
    ``BN-ReLU-Conv1(4g)-BN-ReLU-Conv3(g)``, each fed the concatenation of
    all earlier maps. Shapes: ``[B, C, ...] -> [B, C + layers * g, ...]``."""

    def __init__(self, channels: int, growth: int, layers: int, dropout: float) -> None:
        super().__init__()
        self.layers = nn.ModuleList()
        for i in range(layers):
            c = channels + i * growth
            self.layers.append(nn.Sequential(
                nn.BatchNorm3d(c), nn.ReLU(inplace=True), nn.Conv3d(c, 4 * growth, 1, bias=False),
                nn.BatchNorm3d(4 * growth), nn.ReLU(inplace=True),
                nn.Conv3d(4 * growth, growth, 3, padding=1, bias=False), nn.Dropout3d(dropout),
            ))  # fmt: skip
        self.out_channels = channels + layers * growth

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        maps = [x]
        for layer in self.layers:
            maps.append(layer(torch.cat(maps, 1)))
        return torch.cat(maps, 1)


def _transition(cin: int, cout: int) -> nn.Module:
    return nn.Sequential(
        nn.BatchNorm3d(cin), nn.ReLU(inplace=True), nn.Conv3d(cin, cout, 1, bias=False), nn.AvgPool3d(2)
    )


class BranchExchange(nn.Module):
    """Cross-branch exchange at one scale: each token takes a projection
    of the CNN features under it; each CNN voxel takes a projection of its
    token. The token -> CNN projection starts at zero, so the CNN stream
    starts as a plain DenseNet.

    Shapes: ``cnn [B, C, d, h, w]``, ``tokens [B, d*h*w, E]`` -> same."""

    def __init__(self, channels: int, dim: int) -> None:
        super().__init__()
        self.to_tokens = nn.Linear(channels, dim)
        self.to_cnn = nn.Conv3d(dim, channels, 1)
        nn.init.zeros_(self.to_cnn.weight)
        nn.init.zeros_(self.to_cnn.bias)

    def forward(self, cnn: torch.Tensor, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        b, c, *grid = cnn.shape
        flat = cnn.flatten(2).transpose(1, 2)  # [B, N, C]
        new_tokens = tokens + self.to_tokens(flat)
        as_grid = tokens.transpose(1, 2).reshape(b, -1, *grid)
        return cnn + self.to_cnn(as_grid), new_tokens


class LabelDecoder(nn.Module):
    """One learned query per label: self-attention among the queries (label
    dependencies), cross-attention to the modality tokens, a feed-forward
    layer (all pre-norm, residual), then a per-label linear read-out.

    Shapes: ``memory [B, M, E] -> logits [B, L]``; ``attention`` (after a
    call with ``keep_attention=True``) ``[B, L, M]``, heads averaged."""

    def __init__(self, n_labels: int, dim: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.queries = nn.Parameter(torch.randn(n_labels, dim) * 0.02)
        self.norm_q = nn.LayerNorm(dim)
        self.self_attn = nn.MultiheadAttention(dim, heads, dropout=dropout, batch_first=True)
        self.norm_c = nn.LayerNorm(dim)
        self.norm_m = nn.LayerNorm(dim)
        self.cross_attn = nn.MultiheadAttention(dim, heads, dropout=dropout, batch_first=True)
        self.norm_f = nn.LayerNorm(dim)
        self.ff = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Dropout(dropout), nn.Linear(2 * dim, dim))
        self.readout_w = nn.Parameter(torch.randn(n_labels, dim) * dim**-0.5)
        self.readout_b = nn.Parameter(torch.zeros(n_labels))
        self.attention: torch.Tensor | None = None

    def forward(self, memory: torch.Tensor, keep_attention: bool = False) -> torch.Tensor:
        q = self.queries.expand(memory.shape[0], -1, -1)
        h = self.norm_q(q)
        q = q + self.self_attn(h, h, h, need_weights=False)[0]
        m = self.norm_m(memory)
        out, weights = self.cross_attn(self.norm_c(q), m, m, need_weights=keep_attention)
        self.attention = weights.detach() if keep_attention else None
        q = q + out
        q = q + self.ff(self.norm_f(q))
        return (q * self.readout_w).sum(-1) + self.readout_b


class MedFusionNet(FusionNet):
    """See the module docstring. ``config.tabular_columns`` are the encoded
    EHR columns stage 1 kept (``None``: all); ``config.note_dim`` > 0 adds
    the note token."""

    IMAGE_TOKENS = ("pyramid 1/2", "pyramid 1/4", "pyramid 1/8", "attention")

    def __init__(self, config: ModelConfig) -> None:
        super().__init__(config)
        c, f = config, config.base_filters
        d, g = c.attn_dim, c.growth
        if any(s % 8 for s in c.input_shape):
            raise ValueError(f"MedFusionNet needs input sizes that are multiples of 8, got {c.input_shape}")
        self.stem = nn.Sequential(
            nn.Conv3d(c.in_channels, 2 * f, 3, padding=1, bias=False), nn.BatchNorm3d(2 * f), nn.ReLU(inplace=True),
            nn.MaxPool3d(2),
        )  # fmt: skip
        self.dense1 = DenseBlock(2 * f, g, c.dense_layers, c.dropout / 2)
        c1 = self.dense1.out_channels
        self.trans1 = _transition(c1, c1 // 2)
        self.dense2 = DenseBlock(c1 // 2, g, c.dense_layers, c.dropout / 2)
        c2 = self.dense2.out_channels
        self.trans2 = _transition(c2, c2 // 2)
        self.dense3 = DenseBlock(c2 // 2, g, c.dense_layers, c.dropout / 2)
        c3 = self.dense3.out_channels

        grid4 = [s // 4 for s in c.input_shape]
        grid8 = [s // 8 for s in c.input_shape]
        self.patch = nn.Conv3d(c.in_channels, d, 4, stride=4)
        self.pos4 = nn.Parameter(torch.randn(1, grid4[0] * grid4[1] * grid4[2], d) * 0.02)
        self.pos8 = nn.Parameter(torch.randn(1, grid8[0] * grid8[1] * grid8[2], d) * 0.02)

        def attention_layer() -> nn.Module:
            return nn.TransformerEncoderLayer(
                d, c.attn_heads, 2 * d, dropout=c.dropout / 2, batch_first=True, norm_first=True
            )

        self.attn1, self.attn2 = attention_layer(), attention_layer()
        self.attn_norm = nn.LayerNorm(d)
        self.exchange1 = BranchExchange(c2, d)
        self.exchange2 = BranchExchange(c3, d)
        self.lateral = nn.ModuleList([nn.Conv3d(ch, d, 1) for ch in (c1, c2, c3)])
        self.smooth = nn.ModuleList([nn.Conv3d(d, d, 3, padding=1) for _ in range(3)])

        all_columns = list(range(c.tabular_dim))
        columns = all_columns if c.tabular_columns is None else list(c.tabular_columns)
        self.register_buffer("columns", torch.tensor(columns, dtype=torch.long), persistent=False)
        self.ehr = nn.Sequential(nn.Linear(len(columns), d), nn.ReLU(), nn.Linear(d, d)) if columns else None
        self.note = nn.Sequential(nn.Linear(c.note_dim, d), nn.ReLU(), nn.Linear(d, d)) if c.note_dim else None
        n_tokens = len(self.IMAGE_TOKENS) + (self.ehr is not None) + (self.note is not None)
        self.token_type = nn.Parameter(torch.randn(1, n_tokens, d) * 0.02)
        self.drop = nn.Dropout(c.dropout)
        self.decoder = LabelDecoder(c.n_outputs, d, c.attn_heads, c.dropout / 2)

    @property
    def token_names(self) -> list[str]:
        """What each of the decoder's memory tokens stands for."""
        return list(self.IMAGE_TOKENS) + ["EHR"] * (self.ehr is not None) + ["note"] * (self.note is not None)

    def _encode(self, image: torch.Tensor) -> Features:
        x1 = self.dense1(self.stem(image))  # /2
        x2 = self.dense2(self.trans1(x1))  # /4
        t = self.patch(image)  # [B, d, /4]
        grid4 = t.shape[2:]
        t = self.attn1(t.flatten(2).transpose(1, 2) + self.pos4)
        x2, t = self.exchange1(x2, t)
        x3 = self.dense3(self.trans2(x2))  # /8
        t = F.avg_pool3d(t.transpose(1, 2).reshape(t.shape[0], -1, *grid4), 2)
        t = self.attn2(t.flatten(2).transpose(1, 2) + self.pos8)
        x3, t = self.exchange2(x3, t)
        p3 = self.lateral[2](x3)
        p2 = self.lateral[1](x2) + F.interpolate(p3, size=x2.shape[2:], mode="nearest")
        p1 = self.lateral[0](x1) + F.interpolate(p2, size=x1.shape[2:], mode="nearest")
        levels = [F.relu(s(p)).mean(dim=(2, 3, 4)) for s, p in zip(self.smooth, (p1, p2, p3))]
        levels.append(self.attn_norm(t).mean(1))
        return {"tokens": torch.stack(levels, 1)}

    def split_inputs(self, inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``(EHR encoding [B, tabular_dim], note part [B, note_dim] or None)``."""
        t = self.config.tabular_dim
        return inputs[:, :t], (inputs[:, t:] if self.note is not None else None)

    def _decode(self, features: Features, inputs: torch.Tensor, keep_attention: bool = False) -> torch.Tensor:
        tokens = [features["tokens"]]
        ehr, note = self.split_inputs(inputs)
        if self.ehr is not None:
            tokens.append(self.ehr(ehr.index_select(1, self.columns))[:, None])
        if self.note is not None:
            tokens.append(self.note(note)[:, None])
        memory = self.drop(torch.cat(tokens, 1) + self.token_type)
        return self.decoder(memory, keep_attention=keep_attention)

    @torch.no_grad()
    def label_attention(self, image: torch.Tensor, inputs: torch.Tensor) -> torch.Tensor:
        """Each label's cross-attention over :attr:`token_names`, ``[B, L, M]``
        (rows sum to 1). Attention is not attribution; it shows where each
        label query looked, for teaching."""
        features = self.encode_image(image)
        self._decode(features, inputs, keep_attention=True)
        assert self.decoder.attention is not None
        return self.decoder.attention
