"""Model configuration: one plain, JSON-serialisable description per model.

A :class:`ModelConfig` names a backbone, a fusion method and their sizes;
:func:`napari_hyperfusion.nn.build.build_model` turns it into a network. The
same config is stored in every model file, so a file can be rebuilt without
running any code from it.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any

from ..errors import ConfigError

__all__ = [
    "ModelConfig",
    "HEAD_ACTIVATIONS",
    "LEAKY_SLOPE",
    "ConfigError",
    "BACKBONES",
    "FUSIONS",
    "resnet_hyper_sites",
    "paper_ad_config",
    "paper_brain_age_config",
    "authors_ad_config",
    "BLOCK_STYLES",
    "MODULATION_STYLES",
]

BACKBONES = ("preact_resnet", "brain_age_cnn", "medfusion")
FUSIONS = ("hyperfusion", "imaging", "tabular", "concat", "film", "daft", "medfusion")
# FiLM and DAFT modulate a residual block; the brain-age CNN has none.
_FUSIONS_BY_BACKBONE = {
    "preact_resnet": FUSIONS[:6],
    "brain_age_cnn": ("hyperfusion", "imaging", "tabular", "concat"),
    "medfusion": ("medfusion",),
}
EMBEDDINGS = ("mlp", "fill")
# "ours": the layout this package has always built; "paper": the HyperFusion
# authors' AD backbone as in their public code (see docs/models.md)
BLOCK_STYLES = ("ours", "paper")
HEAD_ACTIVATIONS = ("relu", "leaky_relu")
LEAKY_SLOPE = 0.1  # leaky_relu's slope below zero
# FiLM/DAFT: ours, the HyperFusion authors' baseline block, ai-med's published block
MODULATION_STYLES = ("ours", "paper", "ai-med")
N_RESNET_BLOCKS = 4
N_BRAIN_AGE_FC = 4


def resnet_hyper_sites() -> tuple[str, ...]:
    """Every layer of the pre-activation ResNet that can be hypernetwork-made."""
    blocks = tuple(f"block{i}.{part}" for i in range(1, N_RESNET_BLOCKS + 1) for part in ("conv1", "conv2", "shortcut"))
    return blocks + ("fc1", "fc2")


def brain_age_hyper_sites() -> tuple[str, ...]:
    return tuple(f"fc{i}" for i in range(1, N_BRAIN_AGE_FC + 1))


@dataclass(frozen=True)
class ModelConfig:
    """Architecture of one model.

    Attributes:
        backbone: ``"preact_resnet"`` (AD and risk tasks), ``"brain_age_cnn"``
            or ``"medfusion"`` (MedFusionNet, risk task).
        fusion: ``"hyperfusion"`` or a baseline: ``"imaging"``, ``"tabular"``,
            ``"concat"``, ``"film"``, ``"daft"``; ``"medfusion"`` with its backbone.
        tabular_dim: length of the encoded tabular vector.
        n_outputs: classes (logits) or 1 for regression.
        input_shape: image grid ``(D, H, W)`` in voxels.
        hyper_sites: layers whose parameters the hypernetwork generates
            (HyperFusion only), e.g. ``("block4.shortcut",)``.
        embedding: ``"mlp"`` (Linear-BN-PReLU) or ``"fill"`` (ones-filled,
            both sexes start tied).
        emb_dim: embedding size fed to every hyper layer.
        base_filters: channels of the first stage; later stages double.
        dropout: dropout rate inside blocks and the head.
        head_hidden: hidden width of the classification head (ResNet).
        modulation_hidden: bottleneck width of FiLM/DAFT's MLP.
        hyper_form: computation form of hyper layers (``"auto"`` is measured best).
        head_activation: between the fully connected head's layers,
            ``"relu"`` or ``"leaky_relu"`` (slope :data:`LEAKY_SLOPE` below
            zero: a unit that is off still passes a little of its input and
            its gradient, so a layer cannot go silent for a whole group of
            scans; docs/models.md, "The head goes silent for old brains").
        block_style: layout of the pre-activation ResNet: ``"ours"`` (stem
            conv + 3/2 max-pool; shortcuts read the block's pre-activated
            input; dropout ``dropout`` after the first conv's activation;
            final BN-ReLU before pooling) or ``"paper"`` (the HyperFusion
            authors' code: stem conv-BN-ReLU + 2/2 max-pool; plain shortcut
            BN -> conv and a generated one conv -> BN, both on the raw block
            input; channel dropout 0.1/0.2/0.2/0.3 before both convs of
            blocks 1-4; convs with biases; no final BN-ReLU; dropout 0.6 on
            the pooled features and 0.5 in the head; ``dropout`` is unused).
            ``preact_resnet`` only.
        modulation_style: FiLM/DAFT block (``fusion`` ``"film"``/``"daft"``
            only; reset to ``"ours"`` otherwise): ``"ours"`` (``(1 + scale)
            * BN(x) + shift`` on block 4's normalised input, MLP with biases
            and ``modulation_hidden`` units, last layer zero so it starts as
            identity), ``"paper"`` (the HyperFusion authors' baseline block:
            ``scale * x + shift`` on block 4's raw input, bias-free MLP with
            7 units, the shortcut reads the unmodulated input) or
            ``"ai-med"`` (Wolf et al.'s published block at location 3: a
            post-activation block conv -> non-affine BN -> ``scale * F +
            shift`` -> ReLU -> conv -> BN, + (conv -> BN) shortcut, -> ReLU;
            bias-free convs and MLP with ``(C_in + T) // 7`` units).
        output_shift, output_scale: regression output is ``y * scale + shift``
            so that the network can learn standardised targets but report
            years.
        tabular_columns: MedFusionNet: the encoded EHR columns that stage 1
            (risk-feature selection) kept; ``None`` reads all.
        note_dim: MedFusionNet: length of the note's embedding plus its
            presence flag (0: the model reads no note).
        growth, dense_layers: MedFusionNet's DenseNet growth rate and layers
            per dense block.
        attn_dim, attn_heads: width and heads of its attention stream, the
            feature pyramid and the label decoder.
    """

    backbone: str = "preact_resnet"
    fusion: str = "hyperfusion"
    tabular_dim: int = 16
    n_outputs: int = 3
    input_shape: tuple[int, int, int] = (64, 96, 64)
    in_channels: int = 1
    hyper_sites: tuple[str, ...] = ("block4.shortcut",)
    embedding: str = "mlp"
    emb_dim: int = 8
    base_filters: int = 16
    dropout: float = 0.2
    head_hidden: int = 64
    modulation_hidden: int = 16
    hyper_form: str = "auto"
    head_activation: str = "relu"
    block_style: str = "ours"
    modulation_style: str = "ours"
    output_shift: float = 0.0
    output_scale: float = 1.0
    tabular_columns: tuple[int, ...] | None = None
    note_dim: int = 0
    growth: int = 8
    dense_layers: int = 3
    attn_dim: int = 32
    attn_heads: int = 4

    def __post_init__(self) -> None:
        _check_types(self)
        object.__setattr__(self, "input_shape", tuple(int(v) for v in self.input_shape))
        object.__setattr__(self, "hyper_sites", tuple(self.hyper_sites))
        if self.tabular_columns is not None:
            object.__setattr__(self, "tabular_columns", tuple(int(v) for v in self.tabular_columns))
        self.validate()

    def validate(self) -> None:
        if self.backbone not in BACKBONES:
            raise ConfigError(f"unknown architecture backbone {self.backbone!r}; known: {', '.join(BACKBONES)}")
        allowed = _FUSIONS_BY_BACKBONE[self.backbone]
        if self.fusion not in allowed:
            raise ConfigError(
                f"fusion {self.fusion!r} is not available on {self.backbone}; choose from {', '.join(allowed)}"
            )
        if self.embedding not in EMBEDDINGS:
            raise ConfigError(f"unknown embedding {self.embedding!r}; choose from {', '.join(EMBEDDINGS)}")
        if len(self.input_shape) != 3 or min(self.input_shape) < 1:
            raise ConfigError(f"input_shape must be three positive sizes, got {self.input_shape}")
        min_size = 16 if self.backbone in ("preact_resnet", "medfusion") else 8
        if min(self.input_shape) < min_size:
            raise ConfigError(f"{self.backbone} needs every input dimension >= {min_size}, got {self.input_shape}")
        for name in ("tabular_dim", "n_outputs", "in_channels", "emb_dim", "base_filters", "head_hidden"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.backbone == "medfusion":
            if any(s % 8 for s in self.input_shape):
                raise ConfigError(f"medfusion needs input sizes that are multiples of 8, got {self.input_shape}")
            for name in ("growth", "dense_layers", "attn_dim", "attn_heads"):
                if getattr(self, name) < 1:
                    raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
            if self.attn_dim % self.attn_heads:
                raise ConfigError(f"attn_dim {self.attn_dim} must be a multiple of attn_heads {self.attn_heads}")
            bad = [c for c in self.tabular_columns or () if not 0 <= c < self.tabular_dim]
            if bad:
                raise ConfigError(f"tabular_columns {bad} are outside the {self.tabular_dim} encoded EHR columns")
        elif self.note_dim or self.tabular_columns is not None:
            raise ConfigError("note_dim and tabular_columns belong to the medfusion backbone")
        if self.note_dim < 0:
            raise ConfigError(f"note_dim must be >= 0, got {self.note_dim}")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"dropout must be in [0, 1), got {self.dropout}")
        if self.head_activation not in HEAD_ACTIVATIONS:
            raise ConfigError(
                f"unknown head_activation {self.head_activation!r}; choose from {', '.join(HEAD_ACTIVATIONS)}"
            )
        if self.block_style not in BLOCK_STYLES:
            raise ConfigError(f"unknown block_style {self.block_style!r}; choose from {', '.join(BLOCK_STYLES)}")
        if self.block_style != "ours" and self.backbone != "preact_resnet":
            raise ConfigError(f"block_style {self.block_style!r} exists for preact_resnet only, not {self.backbone}")
        if self.modulation_style not in MODULATION_STYLES:
            raise ConfigError(
                f"unknown modulation_style {self.modulation_style!r}; choose from {', '.join(MODULATION_STYLES)}"
            )
        if self.fusion not in ("film", "daft"):
            # like hyper_sites: one set of overrides can serve every fusion of a sweep
            object.__setattr__(self, "modulation_style", "ours")
        if self.fusion == "hyperfusion":
            valid = resnet_hyper_sites() if self.backbone == "preact_resnet" else brain_age_hyper_sites()
            if not self.hyper_sites:
                raise ConfigError("hyperfusion needs at least one entry in hyper_sites")
            unknown = [s for s in self.hyper_sites if s not in valid]
            if unknown:
                raise ConfigError(f"unknown hyper_sites {unknown}; valid: {', '.join(valid)}")
        elif self.hyper_sites and self.fusion != "hyperfusion":
            object.__setattr__(self, "hyper_sites", ())

    @property
    def input_dim(self) -> int:
        """Length of the network's non-image input: the EHR encoding, then
        the note's embedding (MedFusionNet with a note)."""
        return self.tabular_dim + self.note_dim

    @property
    def uses_note(self) -> bool:
        return self.note_dim > 0

    @property
    def uses_tabular(self) -> bool:
        return self.fusion != "imaging"

    @property
    def uses_image(self) -> bool:
        return self.fusion != "tabular"

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["input_shape"] = list(self.input_shape)
        data["hyper_sites"] = list(self.hyper_sites)
        if self.tabular_columns is not None:
            data["tabular_columns"] = list(self.tabular_columns)
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ModelConfig:
        if not isinstance(data, Mapping):
            raise ConfigError(f"a model config is a table of settings, got {type(data).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"unknown config key(s): {', '.join(unknown)}")
        try:
            return cls(**dict(data))
        except TypeError as err:
            raise ConfigError(f"malformed config: {err}") from None

    def replace(self, **changes: Any) -> ModelConfig:
        return ModelConfig.from_dict({**self.to_dict(), **changes})


_INT_FIELDS = ("tabular_dim", "n_outputs", "in_channels", "emb_dim", "base_filters", "head_hidden",
               "modulation_hidden", "note_dim", "growth", "dense_layers", "attn_dim", "attn_heads")  # fmt: skip
_FLOAT_FIELDS = ("dropout", "output_shift", "output_scale")
_STR_FIELDS = ("backbone", "fusion", "embedding", "hyper_form", "head_activation", "block_style", "modulation_style")


def _is_int(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


_MAX_INT = 2**31 - 1


def _check_types(config: ModelConfig) -> None:
    """Refuse values of the wrong type before any is used (a config may come
    from a model file or a hand-written TOML): ``int("3.7")``-style
    coercion would hide them or fail with an unrelated message."""
    for name in _INT_FIELDS:
        if not _is_int(getattr(config, name)):
            raise ConfigError(f"{name} must be a whole number, got {getattr(config, name)!r}")
        if abs(getattr(config, name)) > _MAX_INT:  # no layer size is near this; torch would overflow on it
            raise ConfigError(f"{name} is too large: {str(getattr(config, name))[:40]}")
    for name in _FLOAT_FIELDS:
        value = getattr(config, name)
        if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
            raise ConfigError(f"{name} must be a finite number, got {value!r}")
    for name in _STR_FIELDS:
        if not isinstance(getattr(config, name), str):
            raise ConfigError(f"{name} must be text, got {getattr(config, name)!r}")
    sequences = {"input_shape": config.input_shape, "hyper_sites": config.hyper_sites}
    if config.tabular_columns is not None:
        sequences["tabular_columns"] = config.tabular_columns
    for name, value in sequences.items():
        if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)):
            raise ConfigError(f"{name} must be a list, got {value!r}")
        wanted = (lambda v: isinstance(v, str)) if name == "hyper_sites" else _is_int
        if not all(wanted(v) for v in value):
            kind = "names" if name == "hyper_sites" else "whole numbers"
            raise ConfigError(f"{name} must be a list of {kind}, got {list(value)!r}")
        if name != "hyper_sites" and any(abs(v) > _MAX_INT for v in value):
            raise ConfigError(f"{name} holds a value too large to be a size: {list(value)!r:.80}")


def paper_ad_config(fusion: str = "hyperfusion", **overrides: Any) -> ModelConfig:
    """The paper's AD classifier: 64x96x64 hippocampus crop, 16 base
    filters, block 4's shortcut generated from a 16 -> 8 embedding."""
    return ModelConfig(backbone="preact_resnet", fusion=fusion, **overrides)


def authors_ad_config(fusion: str = "hyperfusion", **overrides: Any) -> ModelConfig:
    """The paper's AD classifier laid out as in the authors' public code:
    ``block_style="paper"``, and for FiLM/DAFT their baseline block
    (``modulation_style="paper"``).

    Args:
        fusion: ``"hyperfusion"`` or a baseline.
        **overrides: any other :class:`ModelConfig` field.

    Returns:
        The config.
    """
    defaults: dict[str, Any] = dict(block_style="paper", modulation_style="paper")
    defaults.update(overrides)
    return paper_ad_config(fusion, **defaults)


def paper_brain_age_config(fusion: str = "hyperfusion", **overrides: Any) -> ModelConfig:
    """The paper's sex-conditioned brain-age regressor: all four FC layers
    generated from a 1-d "fill" embedding of one-hot sex.

    Input: 80 x 96 x 80 voxels, the brain of a 2 mm MNI-space scan (our
    choice; the paper's input was larger, at 1 mm)."""
    defaults: dict[str, Any] = dict(
        backbone="brain_age_cnn",
        fusion=fusion,
        tabular_dim=2,
        n_outputs=1,
        input_shape=(80, 96, 80),
        hyper_sites=brain_age_hyper_sites(),
        embedding="fill",
        emb_dim=1,
        dropout=0.2,
    )
    defaults.update(overrides)
    return ModelConfig(**defaults)
