"""One subject's prediction: a scan (any NIfTI placement) and an EHR record
through a loaded model, with everything a viewer needs to show and keep.

UI-free: the napari panel calls :func:`predict_subject` from a worker
thread; tests call it directly and compare with the panel's result.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from ..data.input_qc import require_input
from ..data.model_inputs import encode_record
from ..data.preprocess import ModelGrid, Scan, prepare_views
from ..errors import ImageError
from ..io.model_file import LoadedModel
from .cohort import predict_views
from .typicality import assess

__all__ = ["SubjectPrediction", "predict_subject", "predict_subject_and_features", "prepare_subject"]


@dataclass
class SubjectPrediction:
    """The result of one prediction.

    ``values``: class probabilities ``[K]``, per-label probabilities
    ``[L]`` (multilabel, each on its own; ``thresholds`` decide positive)
    or ``[1]`` (years);
    ``per_view``: ``[V, K]`` before averaging over the model's views;
    ``record``: the values used (missing ones filled); ``imputed``: the
    names of the fields that were filled; ``seconds``: wall time."""

    model_name: str
    model_sha256: str
    task: str
    outputs: list[str]
    unit: str
    values: list[float]
    per_view: list[list[float]]
    view_names: list[str]
    record: dict[str, Any]
    imputed: list[str]
    seconds: float
    device: str
    synthetic_model: bool = True
    extra: dict[str, Any] = field(default_factory=dict)
    thresholds: list[float] = field(default_factory=list)
    note: str = ""
    input_qc: dict[str, Any] = field(default_factory=dict)
    typicality: dict[str, Any] = field(default_factory=dict)
    chronological_age: float | None = None
    age_bias: dict[str, Any] = field(default_factory=dict)  # the model's held-out age trend (infer/age_bias.py)

    @property
    def warnings(self) -> list[str]:
        """What is unusual about the inputs: the input gate's warnings and
        the out-of-distribution flags (empty when nothing is)."""
        out = list(self.input_qc.get("reasons", [])) if self.input_qc.get("verdict") == "warn" else []
        return out + list(self.typicality.get("flags", []))

    @property
    def age_gap(self) -> float | None:
        """Brain age minus chronological age (years), when both are known."""
        if self.task != "brain_age" or self.chronological_age is None:
            return None
        return self.values[0] - self.chronological_age

    @property
    def age_gap_corrected(self) -> float | None:
        """The gap from the model's age trend on held-out subjects (years):
        the field's age-bias correction; None without age or trend."""
        if self.age_gap is None or not self.age_bias:
            return None
        from .age_bias import AgeBias

        return AgeBias.from_dict(self.age_bias).corrected_gap(self.values[0], self.chronological_age)

    @property
    def is_classifier(self) -> bool:
        return self.task == "ad_classification"

    @property
    def is_multilabel(self) -> bool:
        return self.task == "risk_multilabel"

    @property
    def positive(self) -> list[str]:
        """Multilabel: the labels at or above their threshold."""
        cuts = self.thresholds or [0.5] * len(self.outputs)
        return [n for n, p, t in zip(self.outputs, self.values, cuts) if p >= t]

    @property
    def predicted(self) -> str:
        """The top class, the positive labels, or the value with its unit."""
        if self.is_classifier:
            return self.outputs[int(np.argmax(self.values))]
        if self.is_multilabel:
            return ", ".join(self.positive) or "no label positive"
        return f"{self.values[0]:.1f} {self.unit}".strip()

    @property
    def spread(self) -> float:
        """SD of the output over the views (regression), 0 with one view."""
        column = np.asarray(self.per_view)[:, 0]
        return float(column.std()) if len(column) > 1 else 0.0

    def summary(self) -> str:
        if self.is_multilabel:
            probs = ", ".join(f"{n} {p:.0%}" for n, p in zip(self.outputs, self.values))
            return f"positive: {self.predicted} ({probs})"
        if self.is_classifier:
            probs = ", ".join(f"{n} {p:.0%}" for n, p in zip(self.outputs, self.values))
            text = f"{self.predicted} ({probs})"
        else:
            text = f"{self.outputs[0]} {self.predicted}"
            if len(self.per_view) > 1:
                text += f" +- {self.spread:.1f} over {len(self.per_view)} views"
            if self.age_gap is not None:
                text += f"; chronological age {self.chronological_age:g} years, gap {self.age_gap:+.1f} years"
                if self.age_gap_corrected is not None:
                    text += f" ({self.age_gap_corrected:+.1f} after the age-bias correction)"
        return text

    def to_metadata(self) -> dict[str, Any]:
        """JSON-friendly, for ``layer.metadata``."""
        return asdict(self)


def prepare_subject(model: LoadedModel, scan: Scan | None, record: Mapping[str, Any], note: str = ""):
    """Views ``[1, V, D, H, W]`` (or ``None``) and the network's input
    ``[1, input_dim]`` (the note too, for a model that reads one), plus
    the filled record and the imputed field names."""
    info = model.info
    filled, missing = info.schema.fill(record)
    tabular = encode_record(info.config, info.schema, record, note)[None]
    views = None
    if info.config.uses_image:
        if scan is None:
            raise ImageError(f"{info.name} needs an image")
        views = prepare_views(scan, ModelGrid.from_dict(info.image))[None]
    return views, tabular, filled, sorted(missing)


def predict_subject_and_features(
    model: LoadedModel,
    scan: Scan | None,
    record: Mapping[str, Any],
    progress: Callable[[str], None] | None = None,
    note: str = "",
    chronological_age: float | None = None,
    scan_name: str = "",
    gate: bool = True,
) -> tuple[SubjectPrediction, list[dict[str, Any]]]:
    """Predict one subject.

    The scan first passes the input gate
    (:func:`~napari_hyperfusion.data.input_qc.require_input`): a scan that
    is not a brain in MNI space is refused before the network sees it; a
    warning is kept on the result (``input_qc``), as are the
    out-of-distribution flags (``typicality``). ``chronological_age``
    (years, brain-age models) gives the result its brain-age gap;
    ``scan_name`` names the scan in a refusal (default: its file name).
    ``gate=False`` skips the gate, for measurements on deliberately
    corrupted scans only (``scripts/check_robustness.py``); the result then
    has no ``input_qc``.

    Raises the core's own errors for bad input:
    :class:`~napari_hyperfusion.data.input_qc.InputRefused` (the gate),
    :class:`~napari_hyperfusion.data.preprocess.ImageError` (scan),
    :class:`~napari_hyperfusion.data.schema.SchemaError` (record) and
    :class:`~napari_hyperfusion.data.notes.NoteEncoderError` (note).

    Returns:
        The :class:`SubjectPrediction`, and each view's image features of
        the same pass (``[]`` for a model without an image), ready for a
        :class:`~napari_hyperfusion.analysis.whatif.WhatIfSession`."""
    start = time.perf_counter()
    qc = None
    if gate and model.info.config.uses_image and scan is not None:
        if progress:
            progress("checking the scan against the MNI template")
        qc = require_input(scan, model.info.input_stats.get("scan"), scan_name or _scan_name(scan))
    if progress:
        progress("resampling the scan onto the model grid")
    views, tabular, filled, imputed = prepare_subject(model, scan, record, note)
    if progress:
        progress(f"running the network on {model.device.type}")
    pred = predict_views(model.net, views, tabular, model.info.kind, device=model.device, with_features=True,
                         keep_image_features=True)  # fmt: skip
    info = model.info
    view_names = ModelGrid.from_dict(info.image).view_names if info.config.uses_image else []
    extra: dict[str, Any] = {}
    if hasattr(model.net, "label_attention") and views is not None:
        extra["label_attention"] = label_attention(model, views, tabular)
    typical = assess(model, filled, pred.features)
    result = SubjectPrediction(
        model_name=info.name,
        model_sha256=model.sha256,
        task=info.task,
        outputs=list(info.outputs),
        unit=info.output_unit,
        values=[float(v) for v in pred.values[0]],
        per_view=pred.per_view[0].astype(float).tolist(),
        view_names=view_names,
        record={k: (float(v) if isinstance(v, (int, float, np.floating)) else v) for k, v in filled.items()},
        imputed=imputed,
        seconds=time.perf_counter() - start,
        device=str(model.device),
        synthetic_model=info.synthetic_data,
        thresholds=list(info.thresholds),
        note=note if info.config.uses_note else "",
        extra=extra,
        input_qc=qc.to_dict() if qc is not None else {},
        typicality=typical.to_dict(),
        chronological_age=None if chronological_age is None else float(chronological_age),
        age_bias=dict(info.input_stats.get("age_bias") or {}),
    )
    return result, pred.image_features or []


def predict_subject(
    model: LoadedModel,
    scan: Scan | None,
    record: Mapping[str, Any],
    progress: Callable[[str], None] | None = None,
    note: str = "",
    chronological_age: float | None = None,
    scan_name: str = "",
    gate: bool = True,
) -> SubjectPrediction:
    """Predict one subject (:func:`predict_subject_and_features` without the
    image features)."""
    return predict_subject_and_features(model, scan, record, progress, note, chronological_age, scan_name, gate)[0]


def _scan_name(scan: Scan) -> str:
    return scan.path.name if scan.path is not None else "the scan"


def label_attention(model: LoadedModel, views: np.ndarray, tabular: np.ndarray) -> dict[str, dict[str, float]]:
    """MedFusionNet: where each label's query looked, ``{label: {token:
    weight}}`` (weights sum to 1 per label; mean over views). Attention is
    not attribution: it shows the decoder's reading, not what mattered."""
    import torch

    net = model.net
    image = torch.as_tensor(views[0][:, None], dtype=torch.float32, device=model.device)  # [V, 1, D, H, W]
    inputs = torch.as_tensor(tabular, device=model.device).expand(image.shape[0], -1)
    weights = net.label_attention(image, inputs).mean(0).cpu().numpy()  # [L, M]
    names = net.token_names
    return {label: {t: float(w) for t, w in zip(names, row)} for label, row in zip(model.info.outputs, weights)}
