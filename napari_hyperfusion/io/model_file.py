"""Model files: safetensors weights with JSON metadata, never a pickle.

One file holds everything: the tensors of the network's ``state_dict`` and,
in the safetensors header's ``__metadata__`` under the key
``"napari_hyperfusion"``, a JSON document with the architecture config, the
tabular schema, the task and its outputs, provenance, metrics and the
"synthetic / research use" flags. Loading parses that header, rebuilds the
network from the config and copies the tensors in; no code from the file is
ever run, so a file from anywhere is safe to open.

Nothing in the file is trusted before it is checked: the header's layout,
then the metadata against :mod:`~napari_hyperfusion.io.metadata_schema`
(types, bounds, sizes that must agree), then the memory the architecture
implies (:mod:`~napari_hyperfusion.nn.footprint`, refused above a limit
before anything is allocated), then every weight's name, shape and
finiteness.

Errors are :class:`ModelFileError` with a ``reason`` code (``"not_found"``,
``"pickle"``, ``"not_safetensors"``, ``"truncated"``, ``"not_a_model"``,
``"bad_metadata"``, ``"unknown_architecture"``, ``"too_large"``,
``"weights_mismatch"``, ``"non_finite"``) and a message that says what is
wrong and what to do.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from .. import __version__
from ..data.schema import TabularSchema
from ..errors import ModelFileError
from ..nn.base import FusionNet
from ..nn.build import build_model
from ..nn.config import ConfigError, ModelConfig
from ..nn.devices import resolve_device
from ..nn.footprint import ResourceLimits, check_footprint
from .atomic import atomic_write
from .metadata_schema import check_metadata

__all__ = [
    "ModelFileError",
    "ModelInfo",
    "LoadedModel",
    "save_model",
    "load_model",
    "read_info",
    "MODEL_SUFFIX",
]

METADATA_KEY = "napari_hyperfusion"
FORMAT_NAME = "napari-hyperfusion-model"
FORMAT_VERSION = 1
MODEL_SUFFIX = ".safetensors"
TASKS = ("ad_classification", "brain_age", "risk_multilabel")
# safetensors allows 100 MB of header; ours are under 100 kB, and parsing a
# crafted 100 MB JSON document would cost gigabytes of Python objects
_HEADER_LIMIT = 16 * 1024 * 1024
_DTYPE_BYTES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1, "BOOL": 1}


# what each crop must hold of the template: a view grid moved off its region reads something else
CROP_REGION = {"hippocampus": "hippocampi", "whole": "brain tissue (GM + WM)"}
MIN_REGION_COVERAGE = 0.5


def _require_grid_on_its_region(grid: Any) -> None:
    from ..data.template import grid_coverage

    for v in range(grid.n_views):
        name = str(grid.views[v][0]) if grid.views else grid.crop
        # each hippocampus view must hold its own side; a whole-brain view, the brain
        side = "right" if "right" in name else "left" if "left" in name else None
        region = f"{side} hippocampus" if grid.crop == "hippocampus" and side else CROP_REGION[grid.crop]
        cover = grid_coverage(grid.shape, [grid.affine(v)])[region]
        if cover < MIN_REGION_COVERAGE:
            raise ModelFileError(
                f"its view {ascii(name)[:60]} holds only {cover:.0%} of the template's {region} (at least "
                f"{MIN_REGION_COVERAGE:.0%} expected): the grid is not where its name says; it would read "
                "another part of the brain",
                "bad_metadata",
            )


def _require_plain(text: str, what: str, longest: int = 1000) -> None:
    """Refuse text with control characters (terminal escapes) or absurd length."""
    if len(text) > longest or any(not c.isprintable() for c in text):
        raise ModelFileError(
            f"the {what} {ascii(text)[:80]} holds control characters or is over {longest} characters long",
            "bad_metadata",
        )


@dataclass
class ModelInfo:
    """Everything about a model except its weights.

    ``outputs`` are class names (classification), label names
    (multilabel) or one name (regression); ``output_unit`` e.g.
    ``"years"``; ``image`` describes the model grid (``{"shape": [D, H, W],
    "spacing_mm": [..], "space": "MNI152", ...}``). Multilabel models also
    carry ``thresholds`` (one decision threshold per label, chosen on the
    validation rows), ``feature_selection`` (stage 1's tests, see
    :class:`~napari_hyperfusion.data.risk_features.RiskSelection`) and, when they
    read notes, ``note_encoder`` (which embedding model). ``input_stats``
    describes the training inputs, for the out-of-distribution flags and the
    input gate (:mod:`napari_hyperfusion.infer.typicality`; ``{}`` in files
    written before them).
    """

    name: str
    task: str
    config: ModelConfig
    schema: TabularSchema
    outputs: list[str]
    output_unit: str = ""
    description: str = ""
    synthetic_data: bool = True
    research_use_only: bool = True
    image: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    provenance: dict[str, Any] = field(default_factory=dict)
    thresholds: list[float] = field(default_factory=list)
    feature_selection: dict[str, Any] = field(default_factory=dict)
    note_encoder: str = ""
    input_stats: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise ModelFileError(f"unknown task {self.task!r}; known: {', '.join(TASKS)}", "bad_metadata")
        if len(self.outputs) != self.config.n_outputs:
            raise ModelFileError(
                f"{len(self.outputs)} output names for a network with {self.config.n_outputs} outputs",
                "bad_metadata",
            )
        if self.schema.n_features != self.config.tabular_dim:
            raise ModelFileError(
                f"the schema encodes {self.schema.n_features} numbers but the network takes {self.config.tabular_dim}",
                "bad_metadata",
            )
        if self.thresholds and len(self.thresholds) != len(self.outputs):
            raise ModelFileError(f"{len(self.thresholds)} thresholds for {len(self.outputs)} labels", "bad_metadata")
        # names reach terminals, CSV headers and the panel: plain words only, never escapes or markup
        texts = [
            (self.name, "model name"),
            (self.output_unit, "output unit"),
            *((o, "output name") for o in self.outputs),
        ]
        for f in self.schema.fields:
            texts += [(f.name, "field name"), (f.label, "field name"), (f.unit, "field unit")]
            texts += [(c, "field category") for c in f.categories]
        for text, what in texts:
            _require_plain(str(text), what)
        for text in self.outputs:
            if not str(text).strip() or any(c in str(text) for c in '<>&"'):
                raise ModelFileError(
                    f'output name {ascii(str(text))[:80]} is not a plain name (empty, or holding < > & ")',
                    "bad_metadata",
                )

    @property
    def is_classifier(self) -> bool:
        """Single-label classification (softmax)."""
        return self.task == "ad_classification"

    @property
    def kind(self) -> str:
        """``"multiclass"``, ``"multilabel"`` or ``"regression"``."""
        return {"ad_classification": "multiclass", "risk_multilabel": "multilabel"}.get(self.task, "regression")

    @property
    def label_thresholds(self) -> list[float]:
        """A multilabel model's decision thresholds (0.5 where none stored)."""
        return list(self.thresholds) if self.thresholds else [0.5] * len(self.outputs)

    def risk_selection(self):
        """Stage 1's :class:`~napari_hyperfusion.data.risk_features.RiskSelection`,
        or ``None`` for a model without one."""
        if not self.feature_selection:
            return None
        from ..data.risk_features import RiskSelection

        return RiskSelection.from_dict(self.feature_selection)

    @property
    def flags_text(self) -> str:
        parts = []
        if self.synthetic_data:
            parts.append("trained on SYNTHETIC data")
        if self.research_use_only:
            parts.append("research and teaching use only, not a diagnostic device")
        return "; ".join(parts)

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT_NAME,
            "format_version": FORMAT_VERSION,
            "name": self.name,
            "task": self.task,
            "description": self.description,
            "config": self.config.to_dict(),
            "schema": self.schema.to_dict(),
            "outputs": {"names": list(self.outputs), "unit": self.output_unit},
            "flags": {"synthetic_data": self.synthetic_data, "research_use_only": self.research_use_only},
            "image": self.image,
            "metrics": self.metrics,
            "provenance": self.provenance,
            "thresholds": list(self.thresholds),
            "feature_selection": self.feature_selection,
            "note_encoder": self.note_encoder,
            "input_stats": self.input_stats,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelInfo:
        if data.get("format") != FORMAT_NAME:
            raise ModelFileError(f"metadata format is {data.get('format')!r}, not {FORMAT_NAME!r}", "bad_metadata")
        version = data.get("format_version")
        if not isinstance(version, int) or version > FORMAT_VERSION:
            raise ModelFileError(
                f"model file format version {version!r} is newer than this napari-hyperfusion "
                f"({__version__}) reads (up to {FORMAT_VERSION}); upgrade the plugin",
                "bad_metadata",
            )
        try:
            config = ModelConfig.from_dict(data["config"])
        except ConfigError as err:
            raise ModelFileError(f"unknown architecture: {err}", "unknown_architecture") from None
        try:
            if data.get("image"):
                from ..data.preprocess import ModelGrid

                grid = ModelGrid.from_dict(data["image"])  # a grid that cannot be built is refused now, not at Predict
                _require_grid_on_its_region(grid)
            schema = TabularSchema.from_dict(data["schema"])
            flags = data.get("flags", {})
            return cls(
                name=str(data["name"]),
                task=str(data["task"]),
                config=config,
                schema=schema,
                outputs=list(data["outputs"]["names"]),
                output_unit=str(data["outputs"].get("unit", "")),
                description=str(data.get("description", "")),
                synthetic_data=bool(flags.get("synthetic_data", True)),
                research_use_only=bool(flags.get("research_use_only", True)),
                image=dict(data.get("image", {})),
                metrics=dict(data.get("metrics", {})),
                provenance=dict(data.get("provenance", {})),
                thresholds=[float(v) for v in data.get("thresholds", [])],
                feature_selection=dict(data.get("feature_selection", {})),
                note_encoder=str(data.get("note_encoder", "")),
                input_stats=dict(data.get("input_stats", {})),
            )
        except (KeyError, TypeError, ValueError) as err:  # SchemaError is a ValueError
            raise ModelFileError(f"malformed model metadata: {err}", "bad_metadata") from None


@dataclass
class LoadedModel:
    """A network in eval mode on ``device``, with its metadata and the file's
    SHA-256 (which identifies the exact weights in results and overlays)."""

    net: FusionNet
    info: ModelInfo
    path: Path
    sha256: str
    device: torch.device

    @property
    def short_hash(self) -> str:
        return self.sha256[:12]


def save_model(path: str | os.PathLike, net: FusionNet, info: ModelInfo, dtype: torch.dtype | None = None) -> Path:
    """Write ``net``'s weights and ``info`` to one safetensors file, atomically
    (a temporary file renamed into place: a crash leaves no half file).

    ``dtype=torch.float16`` halves the size of float weights; they are cast
    back to the network's dtype on load. Returns the path written.
    """
    from safetensors.torch import save_file

    if info.config != net.config:
        raise ValueError("info.config differs from the network's config")
    path = Path(path)
    tensors = {}
    for key, value in net.state_dict().items():
        value = value.detach().cpu()
        if dtype is not None and value.is_floating_point():
            value = value.to(dtype)
        tensors[key] = value.contiguous()
    metadata = {METADATA_KEY: json.dumps(info.to_dict(), sort_keys=True)}
    atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata=metadata))
    return path


def stored_dtype(path: str | os.PathLike) -> torch.dtype | None:
    """float16 when every float weight of the file at ``path`` is stored so
    (the shipped files), else None: what :func:`save_model` needs to rewrite
    the file as it was stored."""
    header = read_header(Path(path))
    floats = {v["dtype"] for k, v in header.items() if k != "__metadata__" and v["dtype"].startswith(("F", "BF"))}
    return torch.float16 if floats == {"F16"} else None


def update_info(path: str | os.PathLike, **changes: Any) -> ModelInfo:
    """Rewrite the model file at ``path`` with ``changes`` to its
    :class:`ModelInfo` (e.g. ``input_stats=...``), its weights as they were
    stored, atomically. Returns the new info.

    Raises:
        ModelFileError: when the changed metadata would not pass
            :func:`~napari_hyperfusion.io.metadata_schema.check_metadata`
            (e.g. a NaN where a number is checked); the file is untouched.
    """
    model = load_model(path, device="cpu")
    info = replace(model.info, **changes)
    # the file must still open afterwards: check what will be written, not only what was read
    check_metadata(json.loads(json.dumps(info.to_dict(), sort_keys=True)))
    save_model(path, model.net.cpu(), info, dtype=stored_dtype(path))
    return info


def read_header(path: Path) -> dict[str, Any]:
    """Parse and check a safetensors header without reading the tensors."""
    if not path.exists():
        raise ModelFileError(f"{path}: no such file", "not_found")
    if not path.is_file():
        raise ModelFileError(f"{path} is not a file", "not_found")
    size = path.stat().st_size
    with path.open("rb") as fh:
        head = fh.read(9)
        # a safetensors file starts with its header's length (8 bytes, little
        # endian) and then "{"; a length whose low byte is 0x80 must not be
        # taken for a pickle's PROTO opcode
        looks_safetensors = len(head) == 9 and head[4:8] == b"\0\0\0\0" and head[8:9] == b"{"
        if not looks_safetensors and (head[:1] == b"\x80" or head[:4] == b"PK\x03\x04"):
            kind = "a zip archive (torch.save checkpoint)" if head[:2] == b"PK" else "a Python pickle"
            raise ModelFileError(
                f"{path.name} is {kind}, not a safetensors model file. napari-hyperfusion never "
                "unpickles files, because a pickle can run arbitrary code when opened. Convert the "
                "checkpoint with napari_hyperfusion.io.model_file.save_model on a machine you trust.",
                "pickle",
            )
        if len(head) < 8:
            raise ModelFileError(f"{path.name} is too short to be a model file ({size} bytes)", "truncated")
        (n_header,) = struct.unpack("<Q", head[:8])
        fh.seek(8)
        if n_header > _HEADER_LIMIT:
            if n_header <= 100 * 1024 * 1024:  # within safetensors' format, beyond any model of ours
                raise ModelFileError(
                    f"{path.name}: its header is {n_header / 2**20:.0f} MiB, above the {_HEADER_LIMIT >> 20} MiB "
                    "a napari-hyperfusion model file may have", "bad_metadata",
                )  # fmt: skip
            raise ModelFileError(f"{path.name} is not a safetensors model file", "not_safetensors")
        if 8 + n_header > size:
            raise ModelFileError(
                f"{path.name} is truncated: its header needs {8 + n_header} bytes, the file has {size}",
                "truncated",
            )
        raw = fh.read(n_header)
    try:
        header = json.loads(raw.decode("utf-8"))
        if not isinstance(header, dict):
            raise ValueError
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise ModelFileError(f"{path.name} is not a safetensors model file", "not_safetensors") from None
    ends = [_tensor_end(path.name, k, v) for k, v in header.items() if k != "__metadata__"]
    meta = header.get("__metadata__", {})
    if not isinstance(meta, dict) or not all(isinstance(v, str) for v in meta.values()):
        raise ModelFileError(
            f"{path.name}: the safetensors __metadata__ must map names to text; this file's does not",
            "not_safetensors",
        )
    needed = 8 + n_header + max(ends, default=0)
    if needed > size:
        raise ModelFileError(
            f"{path.name} is truncated: it should be {needed} bytes, it has {size}. Copy it again.",
            "truncated",
        )
    return header


def _tensor_end(name: str, key: str, entry: Any) -> int:
    """The end offset of one tensor's bytes, after checking that its entry
    is well formed: a known dtype, a shape of sizes, and offsets that span
    exactly the shape's bytes."""
    bad = f"{name}: tensor {key[:100]!r} has a malformed safetensors entry"
    if not isinstance(entry, dict):
        raise ModelFileError(f"{bad} (not a table)", "not_safetensors")
    dtype, shape, offsets = entry.get("dtype"), entry.get("shape"), entry.get("data_offsets")
    if not isinstance(dtype, str) or dtype not in _DTYPE_BYTES:
        raise ModelFileError(f"{bad}: dtype {str(dtype)[:20]!r} is not one a model holds", "not_safetensors")
    if not isinstance(shape, list) or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0
                                              for s in shape):  # fmt: skip
        raise ModelFileError(f"{bad}: its shape is not a list of sizes", "not_safetensors")
    if not (isinstance(offsets, list) and len(offsets) == 2
            and all(isinstance(o, int) and not isinstance(o, bool) for o in offsets)
            and 0 <= offsets[0] <= offsets[1]):  # fmt: skip
        raise ModelFileError(f"{bad}: data_offsets missing or not two increasing byte offsets", "not_safetensors")
    count = 1
    for size in shape:
        count *= size
    if offsets[1] - offsets[0] != count * _DTYPE_BYTES[dtype]:
        raise ModelFileError(
            f"{bad}: its offsets span {offsets[1] - offsets[0]} bytes, its shape {shape} needs "
            f"{count * _DTYPE_BYTES[dtype]}", "not_safetensors",
        )  # fmt: skip
    return offsets[1]


def read_info(path: str | os.PathLike) -> ModelInfo:
    """A model file's metadata, without loading any weights."""
    path = Path(path)
    header = read_header(path)
    meta = header.get("__metadata__") or {}
    if METADATA_KEY not in meta:
        raise ModelFileError(
            f"{path.name} is a safetensors file but not a napari-hyperfusion model (it has no "
            f"'{METADATA_KEY}' metadata); it may hold another tool's weights",
            "not_a_model",
        )
    try:
        data = json.loads(meta[METADATA_KEY])
    except ValueError:
        raise ModelFileError(f"{path.name}: the model metadata is not valid JSON", "bad_metadata") from None
    except RecursionError:
        raise ModelFileError(f"{path.name}: the model metadata is nested too deeply to read", "bad_metadata") from None
    try:
        check_metadata(data)
        return ModelInfo.from_dict(data)
    except ModelFileError as err:
        raise ModelFileError(f"{path.name}: {err}", err.reason) from None


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def load_model(
    path: str | os.PathLike, device: str | torch.device = "auto", limits: ResourceLimits | None = None
) -> LoadedModel:
    """Open a model file: check its metadata, refuse an architecture that
    needs more memory than ``limits`` (default 4096 MiB, or the environment
    variable ``NAPARI_HYPERFUSION_MAX_MODEL_MB``), rebuild the network,
    load the weights (checking every name, shape and that every value is
    finite), move it to ``device`` and put it in eval mode.

    Raises:
        ModelFileError: with a ``reason`` (module docstring) and a message
            for the user."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path)
    info = read_info(path)
    try:
        check_footprint(info.config, limits)
    except ConfigError as err:
        raise ModelFileError(f"{path.name}: {err}", "too_large") from None
    net = build_model(info.config)
    try:
        tensors = load_file(str(path), device="cpu")
    except SafetensorError as err:
        raise ModelFileError(f"{path.name} could not be read as safetensors: {err}", "not_safetensors") from None
    expected = net.state_dict()
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    wrong = [
        f"{k}: file {tuple(tensors[k].shape)}, network {tuple(v.shape)}"
        for k, v in expected.items()
        if k in tensors and tuple(tensors[k].shape) != tuple(v.shape)
    ]
    if missing or unexpected or wrong:
        lines = []
        if wrong:
            lines.append("shape mismatch: " + "; ".join(wrong[:5]))
        if missing:
            lines.append("missing: " + ", ".join(missing[:5]) + (" ..." if len(missing) > 5 else ""))
        if unexpected:
            lines.append("unexpected: " + ", ".join(unexpected[:5]) + (" ..." if len(unexpected) > 5 else ""))
        raise ModelFileError(
            f"{path.name}: the weights do not match the architecture in its metadata ({'; '.join(lines)})",
            "weights_mismatch",
        )
    broken = [k for k, v in tensors.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if broken:
        raise ModelFileError(
            f"{path.name}: {len(broken)} weight tensor(s) hold NaN or infinite values ({', '.join(broken[:3])}"
            f"{' ...' if len(broken) > 3 else ''}); the file is damaged or came from a diverged training run",
            "non_finite",
        )
    net.load_state_dict({k: tensors[k].to(v.dtype) for k, v in expected.items()})
    target = resolve_device(device)
    net.to(target).eval()
    return LoadedModel(net=net, info=info, path=path, sha256=_sha256(path), device=target)
