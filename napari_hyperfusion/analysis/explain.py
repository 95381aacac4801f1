"""Captum attributions for one subject: where in the scan, and which EHR
fields, moved the chosen output.

The attributed quantity is what the panel shows: the probability of the
chosen class (softmax), or the predicted age in years. With
``output="logit"`` a classifier's class is explained by its log-odds
``log(p / (1 - p))`` instead (for a softmax: ``z_k - logsumexp_{j != k}
z_j``; for a multilabel model the label's logit): the probability of a
confident prediction (``p > 0.99``) is saturated, its gradients vanish and
Integrated Gradients' path integral is dominated by its error, while the
log-odds keep the same ranking of inputs and do not saturate. Image maps live on
the model grid, one per view, each with the view's voxel -> MNI mm affine,
so an overlay sits on the scan in world space without resampling.

Methods (``IMAGE_METHODS``):

- ``"saliency"``: |d output / d voxel| (Simonyan et al. 2014); one backward
  pass, the fast default;
- ``"gradcam"``: Grad-CAM on the last convolutional stage, upsampled
  trilinearly to the grid (Selvaraju et al. 2017);
- ``"integrated_gradients"``: Sundararajan et al. 2017 against a baseline
  (``"zeros"``: the background intensity; ``"blurred"``: the scan smoothed
  with a 6 mm Gaussian; ``"template"``: the shipped MNI template on the same
  grid), with its convergence delta (completeness error);
- ``"occlusion"``: the drop in the output when a cube of ``window`` voxels
  is set to the background, slid with ``stride`` (Zeiler & Fergus 2014).

Long runs can report progress and be cancelled: ``progress(done, total)``
is called after each network evaluation and ``should_stop()`` is checked
before each one (raising :class:`Cancelled`), so a run stops between
batches.

Notes (models that read one, :func:`attribute_note`): Shapley values of
the note's sentences (Captum's ``ShapleyValues``, exact, for up to 6
sentences; ``ShapleyValueSampling`` beyond), each coalition of sentences
re-embedded as a note; they sum to f(full note) - f(no note).

The attributed quantity of a multilabel model is the chosen label's
sigmoid probability.

Shapes: image attributions ``[V, D, H, W]`` float32 (same units as the
output per voxel); tabular attributions one number per schema field (and
one for the note); note attributions one number per sentence.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from scipy import ndimage

from ..data.model_inputs import encode_record
from ..data.preprocess import ModelGrid, Scan, prepare_views
from ..errors import ExplainError, ImageError
from ..infer.cohort import to_probabilities
from ..io.model_file import LoadedModel

__all__ = [
    "IMAGE_METHODS",
    "BASELINES",
    "OUTPUTS",
    "SATURATION",
    "blank_map_text",
    "Cancelled",
    "ImageAttribution",
    "TabularAttribution",
    "attribute_image",
    "mean_encoding",
    "attribute_tabular",
    "attribute_note",
    "NoteAttribution",
    "target_index",
    "log_odds",
]

IMAGE_METHODS = ("saliency", "gradcam", "integrated_gradients", "occlusion")
BASELINES = ("zeros", "blurred", "template")
OUTPUTS = ("probability", "logit")  # what is explained: the probability (or age), or the class's log-odds
SATURATION = 0.99  # a probability above this (or below 1 - this) is saturated: explain the logit
BLANK_MAP_TEXT = (
    "The {method} map of {target} is zero everywhere, so it cannot show which regions matter: nothing of the "
    "scan reaches the output along the path it measures (as when every unit of a layer of the model's head is "
    "off for this scan, and the output does not move with it).{advice}"
)
BLANK_MAP_ADVICE = " Try Occlusion, which compares whole answers."


def blank_map_text(method: str, label: str, target: str) -> str:
    """The warning for a map that is zero everywhere (``method``: the
    :data:`IMAGE_METHODS` key; ``label``: its name as shown)."""
    return BLANK_MAP_TEXT.format(method=label, target=target, advice="" if method == "occlusion" else BLANK_MAP_ADVICE)


class Cancelled(Exception):
    """Raised inside an attribution when ``should_stop()`` turned true."""


@dataclass
class ImageAttribution:
    """``maps [V, D, H, W]`` on the model grid; ``affines`` voxel -> mm per
    view; ``signed`` says whether negative values carry meaning."""

    maps: np.ndarray
    affines: list[np.ndarray]
    view_names: list[str]
    method: str
    target: str
    params: dict[str, Any]
    signed: bool
    output: float
    convergence_delta: float | None = None
    relative_delta: float | None = None
    attributed_change: float | None = None
    seconds: float = 0.0
    output_kind: str = "probability"  # "probability" (or years), or "logit" (a class's log-odds)
    probability: float | None = None  # the target's probability (classifiers), whatever is explained

    @property
    def saturated(self) -> bool:
        """True when a classifier's target probability is beyond
        :data:`SATURATION` (``p > 0.99`` or ``p < 0.01``): the probability's
        gradients vanish there, so explain the logit instead."""
        if self.probability is None:
            return False
        return self.probability > SATURATION or self.probability < 1.0 - SATURATION

    @property
    def is_blank(self) -> bool:
        """True when the map is zero in every voxel of every view: the
        explained output does not move with the scan here (a ReLU head
        with every unit of a layer off passes no gradient; see
        ``scripts/head_activity.py``), so the map shows nothing, not "no
        region matters"."""
        return not np.any(self.maps)

    def completeness_is_poor(self, share: float = 0.05, atol: float = 1e-5) -> bool:
        """True when IG's completeness error is more than ``share`` of the
        attributed change ``|f(x) - f(baseline)|`` (a relative test: a
        saturated p = 0.999 whose map sums to 0.0037 against a change of
        0.001 is a 265 % error, and is flagged however small both are).

        ``atol`` (output units; probability, log-odds or years) guards the
        case where the change itself is numerical noise: an error below it
        is never poor, so f(x) == f(baseline) to float32 precision does not
        raise alarms. For a change smaller than ``atol / share`` (2e-4 by
        default) the error must still exceed ``atol``."""
        rel = self.completeness_error
        if rel is None or self.convergence_delta is None:
            return False
        return self.convergence_delta > atol and rel > share

    @property
    def completeness_error(self) -> float | None:
        """IG's completeness error relative to the output change,
        ``|sum(map) - (f(x) - f(baseline))| / |f(x) - f(baseline)|`` (the
        worst view; 1.0 is 100 %), or None for other methods."""
        if self.relative_delta is not None:
            return self.relative_delta
        if self.convergence_delta is None or self.attributed_change is None:
            return None
        return self.convergence_delta / max(abs(self.attributed_change), 1e-6)

    def warnings(self, share: float = 0.05) -> list[str]:
        """Plain-text advice for this map: a map that is zero everywhere, a
        saturated probability (explain the logit), a poor IG completeness
        (relative to the change)."""
        out = []
        if self.is_blank:
            out.append(blank_map_text(self.method, self.method.replace("_", " "), self.target))
        explains_probability = self.output_kind == "probability" and self.probability is not None
        if explains_probability and self.saturated:
            out.append(
                f"p({self.target}) = {self.probability:.4f} is saturated: the probability barely moves, its "
                "gradients vanish and the map is mostly noise; explain the logit instead"
            )
        if self.completeness_is_poor(share):
            change = abs(self.attributed_change or 0.0)
            out.append(
                f"Integrated Gradients' completeness error is {self.completeness_error:.0%} "
                f"of the attributed change {change:.2g} (delta {self.convergence_delta:.2g}); "
                + ("explain the logit" if explains_probability and self.saturated else "raise the IG steps")
                + " for a faithful map"
            )
        return out


@dataclass
class TabularAttribution:
    """Integrated Gradients per EHR field (summed over its encoded columns,
    missing-value indicator included) against the training-mean record,
    plus the image-versus-EHR share of the prediction's change."""

    fields: list[str]
    labels: list[str]
    values: list[float]
    target: str
    output: float
    baseline_output: float
    image_share: float | None
    convergence_delta: float
    extra: dict[str, Any] = field(default_factory=dict)


def target_index(model: LoadedModel, target: str | int | None) -> int:
    """The output index of a class name (or index); ``None`` gives 0 (the
    age of a regressor; callers resolve a classifier's top class first)."""
    outputs = model.info.outputs
    if target is None:
        return 0
    if isinstance(target, int):
        if not 0 <= target < len(outputs):
            raise ExplainError(f"target {target} is out of range for outputs {outputs}")
        return target
    if target not in outputs:
        raise ExplainError(f"unknown target {target!r}; the model's outputs are {', '.join(outputs)}")
    return outputs.index(target)


def _check_output(model: LoadedModel, output: str) -> None:
    if output not in OUTPUTS:
        raise ExplainError(f"unknown output {output!r}; choose from {', '.join(OUTPUTS)}")
    if output == "logit" and model.info.kind == "regression":
        raise ExplainError(
            f"{model.info.name} predicts {', '.join(model.info.outputs)} in {model.info.output_unit or 'its unit'}, "
            "not a probability: there is no logit to explain; explain the probability (the output itself)"
        )


def log_odds(logits: torch.Tensor, kind: str) -> torch.Tensor:
    """Each output's log-odds ``log(p / (1 - p))``, ``[B, K] -> [B, K]``,
    computed from the logits without forming ``p`` (exact for p = 1 - 1e-9):
    a softmax class's ``z_k - logsumexp_{j != k} z_j``, a sigmoid label's
    ``z_k``."""
    z = logits.float()
    if kind != "multiclass":
        return z
    k = z.shape[-1]
    others = z.unsqueeze(-2).expand(*z.shape[:-1], k, k)
    mask = torch.eye(k, dtype=torch.bool, device=z.device)
    return z - torch.logsumexp(others.masked_fill(mask, float("-inf")), dim=-1)


class _Forward:
    """``f(image, tabular) -> [B, K]`` (probabilities or years, or the
    log-odds with ``output="logit"``), counting calls for progress and
    checking for cancellation."""

    def __init__(self, model: LoadedModel, total: int, progress, should_stop, output: str = "probability") -> None:
        self.model, self.total, self.progress, self.should_stop = model, max(total, 1), progress, should_stop
        self.output = output
        self.done = 0

    def select(self, logits: torch.Tensor) -> torch.Tensor:
        """The explained quantity from the network's raw outputs."""
        kind = self.model.info.kind
        return log_odds(logits, kind) if self.output == "logit" else to_probabilities(logits, kind)

    def __call__(self, image: torch.Tensor | None, tabular: torch.Tensor) -> torch.Tensor:
        if self.should_stop is not None and self.should_stop():
            raise Cancelled()
        out = self.select(self.model.net(image, tabular))
        self.done += 1
        if self.progress is not None:
            self.progress(min(self.done, self.total), self.total)
        return out


def _grid(model: LoadedModel) -> ModelGrid:
    return ModelGrid.from_dict(model.info.image)


def _baseline_image(kind: str, view: np.ndarray, grid: ModelGrid, v: int, background: float) -> np.ndarray:
    if kind == "zeros":
        return np.full_like(view, background)
    if kind == "blurred":
        sigma = 6.0 / grid.spacing_mm / 2.355  # 6 mm FWHM
        return ndimage.gaussian_filter(view, sigma).astype(np.float32)
    if kind == "template":
        from ..data.preprocess import scan_from_array
        from ..data.template import load_template

        tpl = load_template()
        return prepare_views(scan_from_array(tpl.t1, tpl.affine, "template"), grid)[v]
    raise ValueError(f"unknown baseline {kind!r}; choose from {', '.join(BASELINES)}")


def _last_conv_stage(net: torch.nn.Module) -> torch.nn.Module:
    """The module whose output is the last feature map: the ResNet's final
    norm (block 4 itself runs split in encode/decode, so it is never
    called as a module) or the brain-age CNN's trunk."""
    if hasattr(net, "final_norm"):
        return net.final_norm
    if hasattr(net, "lateral"):  # MedFusionNet: the pyramid's top (/8, after the last exchange)
        return net.lateral[2]
    return net.trunk


def attribute_image(
    model: LoadedModel,
    scan: Scan,
    record: dict[str, Any],
    method: str = "saliency",
    target: str | int | None = None,  # None: the predicted class
    baseline: str = "zeros",
    n_steps: int = 32,
    internal_batch_size: int | None = None,
    window: int = 6,
    stride: int = 3,
    progress: Callable[[int, int], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    note: str = "",
    output: str = "probability",
) -> ImageAttribution:
    """Attribute the chosen output to every voxel of every view (``note``:
    the clinical note, for a model that reads one).

    ``output``: ``"probability"`` (the class's probability, or a
    regressor's prediction in its unit) or ``"logit"`` (a classifier's
    log-odds of the class, see :func:`log_odds`; use it when the
    probability is saturated, :attr:`ImageAttribution.saturated`). The
    map's unit is the explained output's per voxel."""
    import time

    from captum.attr import IntegratedGradients, LayerAttribution, LayerGradCam, Occlusion, Saliency

    if method not in IMAGE_METHODS:
        raise ValueError(f"unknown method {method!r}; choose from {', '.join(IMAGE_METHODS)}")
    if not model.info.config.uses_image:
        raise ExplainError(f"{model.info.name} does not read the image; only EHR attributions apply")
    _check_output(model, output)
    start = time.perf_counter()
    grid = _grid(model)
    views = prepare_views(scan, grid)  # [V, D, H, W]
    if target is None and model.info.kind != "regression":
        target = _top_class(model, views, record, note)
    k = target_index(model, target)
    background = float(views.min())
    device = model.device
    tabular = torch.as_tensor(_inputs(model, record, note)[None], device=device)
    if internal_batch_size is None:
        internal_batch_size = _fitted_batch(model, n_steps)
    n_views = views.shape[0]
    per_view_calls = {
        "saliency": 1, "gradcam": 1, "integrated_gradients": math.ceil(n_steps / internal_batch_size),
        "occlusion": math.ceil(_n_windows(grid.shape, window, stride) / 8),
    }[method]  # fmt: skip
    forward = _Forward(model, per_view_calls * n_views, progress, should_stop, output)
    maps, outputs, deltas, rel, changes, probabilities = [], [], [], [], [], []
    net = model.net
    net.eval()
    for v in range(n_views):
        x = torch.as_tensor(views[v][None, None], device=device).requires_grad_(True)
        if should_stop is not None and should_stop():
            raise Cancelled()
        with torch.no_grad():  # not part of the method's work: not counted
            logits = net(x, tabular)
            outputs.append(float(forward.select(logits)[0, k]))
            if model.info.kind != "regression":
                probabilities.append(float(to_probabilities(logits, model.info.kind)[0, k]))
        if method == "saliency":
            attr = Saliency(forward).attribute(x, target=k, abs=True, additional_forward_args=(tabular,))
        elif method == "gradcam":
            cam = LayerGradCam(forward, _last_conv_stage(net)).attribute(
                x, target=k, additional_forward_args=(tabular,), relu_attributions=True
            )
            cam = cam.mean(1, keepdim=True) if cam.shape[1] > 1 else cam
            attr = LayerAttribution.interpolate(cam, tuple(grid.shape), interpolate_mode="trilinear")
        elif method == "integrated_gradients":
            base = torch.as_tensor(_baseline_image(baseline, views[v], grid, v, background)[None, None], device=device)
            attr, delta = IntegratedGradients(forward).attribute(
                x, baselines=base, target=k, additional_forward_args=(tabular,), n_steps=n_steps,
                internal_batch_size=internal_batch_size, return_convergence_delta=True,
            )  # fmt: skip
            with torch.no_grad():
                change = outputs[-1] - float(forward.select(net(base, tabular))[0, k])
            deltas.append(float(delta.abs().max()))
            rel.append(deltas[-1] / max(abs(change), 1e-6))
            changes.append(change)
        else:
            attr = Occlusion(forward).attribute(
                x, sliding_window_shapes=(1, window, window, window), strides=(1, stride, stride, stride),
                baselines=background, target=k, additional_forward_args=(tabular,), perturbations_per_eval=8,
            )  # fmt: skip
        maps.append(attr.detach().float().cpu().numpy()[0, 0])
    params: dict[str, Any] = {"output": output}
    if method == "integrated_gradients":
        params.update(baseline=baseline, n_steps=n_steps, internal_batch_size=internal_batch_size)
    elif method == "occlusion":
        params.update(window_voxels=window, stride_voxels=stride)
    return ImageAttribution(
        maps=np.stack(maps).astype(np.float32),
        affines=[grid.affine(v) for v in range(n_views)],
        view_names=grid.view_names,
        method=method,
        target=model.info.outputs[k],
        params=params,
        signed=method in ("integrated_gradients", "occlusion"),
        output=float(np.mean(outputs)),
        convergence_delta=max(deltas) if deltas else None,
        relative_delta=max(rel) if rel else None,
        attributed_change=float(np.mean(changes)) if changes else None,
        seconds=time.perf_counter() - start,
        output_kind=output,
        probability=float(np.mean(probabilities)) if probabilities else None,
    )


def _inputs(model: LoadedModel, record: dict[str, Any], note: str = "") -> np.ndarray:
    return encode_record(model.info.config, model.info.schema, record, note)


def _top_class(model: LoadedModel, views: np.ndarray | None, record: dict[str, Any], note: str = "") -> int:
    """The most probable class (or label, for a multilabel model)."""
    from ..infer.cohort import predict_views

    tab = _inputs(model, record, note)[None]
    pred = predict_views(model.net, None if views is None else views[None], tab, model.info.kind, device=model.device)
    return int(pred.values[0].argmax())


def _n_windows(shape: tuple[int, ...], window: int, stride: int) -> int:
    return int(np.prod([(s - window) // stride + 1 for s in shape]))


def _fitted_batch(model: LoadedModel, n_steps: int) -> int:
    """IG's internal batch: all steps at once on a GPU with room for it,
    else 8 grid copies at a time (a few hundred MB on the CPU)."""
    if model.device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(model.device)
        per_sample = 4 * int(np.prod(model.info.config.input_shape)) * model.info.config.base_filters * 12
        return int(max(1, min(n_steps, free // max(per_sample, 1) // 2)))
    return min(n_steps, 8)


def mean_encoding(schema) -> np.ndarray:
    """The encoded "average patient": every number at its training mean
    (z = 0), a binary at 0.5, a category spread evenly over its levels, no
    value missing. Shape ``[n_features]``."""
    out: list[float] = []
    for f in schema.fields:
        if f.kind == "category":
            out.extend([1.0 / len(f.categories)] * len(f.categories))
        elif f.kind == "binary":
            out.append(0.5)
        else:
            out.append(0.0)
        if f.missing_indicator:
            out.append(0.0)
    return np.asarray(out, dtype=np.float32)


def attribute_tabular(
    model: LoadedModel,
    scan: Scan | None,
    record: dict[str, Any],
    target: str | int | None = None,
    n_steps: int = 64,
    note: str = "",
    output: str = "probability",
) -> TabularAttribution:
    """Integrated Gradients over the encoded EHR vector, through the
    hypernetwork (or the baseline's fusion), with the image fixed.

    Baseline: the training-mean record (:func:`mean_encoding`). Per-field
    values sum the field's encoded columns. With an
    image, a joint run over (image, EHR) against (blurred scan, mean
    record) gives the EHR's share of the attributed change.

    A model that reads notes gets one more entry, ``"NOTE"``: the whole
    note's attribution against "no note" (its embedding and presence flag
    at zero); :func:`attribute_note` splits it over sentences. For
    MedFusionNet, fields that stage 1 dropped are exactly 0.

    ``output``: ``"probability"`` or ``"logit"``, as for
    :func:`attribute_image`."""
    from captum.attr import IntegratedGradients

    _check_output(model, output)
    if not model.info.config.uses_tabular:
        raise ExplainError(f"{model.info.name} reads no EHR field (an imaging-only model): nothing to attribute")
    schema = model.info.schema
    device = model.device
    image = views = grid = None
    if model.info.config.uses_image:
        if scan is None:
            raise ImageError(f"{model.info.name} needs an image")
        grid = _grid(model)
        views = prepare_views(scan, grid)
        image = torch.as_tensor(views[:1][None], device=device)
    if target is None and model.info.kind != "regression":
        target = _top_class(model, views, record, note)
    k = target_index(model, target)
    x_tab = torch.as_tensor(_inputs(model, record, note)[None], device=device)
    base = np.zeros(model.info.config.input_dim, dtype=np.float32)  # the note part: no note
    base[: schema.n_features] = mean_encoding(schema)
    b_tab = torch.as_tensor(base[None], device=device)
    forward = _Forward(model, 1, None, None, output)
    model.net.eval()

    def f_tab(tab: torch.Tensor) -> torch.Tensor:
        img = None if image is None else image.expand(tab.shape[0], *image.shape[1:])
        return forward(img, tab)

    attr, delta = IntegratedGradients(f_tab).attribute(
        x_tab, baselines=b_tab, target=k, n_steps=n_steps, return_convergence_delta=True
    )
    columns = attr.detach().cpu().numpy()[0]
    values, i = [], 0
    for f in schema.fields:
        n = len(f.encoded_names)
        values.append(float(columns[i : i + n].sum()))
        i += n
    fields, labels = [f.name for f in schema.fields], [f.display_name for f in schema.fields]
    if model.info.config.uses_note:
        values.append(float(columns[i:].sum()))
        fields.append("NOTE")
        labels.append("Clinical note")
    with torch.no_grad():
        out = float(f_tab(x_tab)[0, k])
        base_out = float(f_tab(b_tab)[0, k])
    share = None
    if image is not None:
        sigma = 6.0 / grid.spacing_mm / 2.355  # type: ignore[union-attr]
        blurred = torch.as_tensor(ndimage.gaussian_filter(image.cpu().numpy()[0, 0], sigma)[None, None], device=device)
        (a_img, a_tab) = IntegratedGradients(forward).attribute(
            (image, x_tab), baselines=(blurred, b_tab), target=k, n_steps=n_steps, internal_batch_size=8
        )
        img_total, tab_total = abs(float(a_img.sum())), abs(float(a_tab.sum()))
        share = img_total / (img_total + tab_total) if img_total + tab_total > 0 else None
    return TabularAttribution(
        fields=fields,
        labels=labels,
        values=values,
        target=model.info.outputs[k],
        output=out,
        baseline_output=base_out,
        image_share=share,
        convergence_delta=float(delta.abs().max()),
        extra={"output": output},
    )


@dataclass
class NoteAttribution:
    """Shapley value of each sentence of the note for the ``target`` output:
    ``values`` sum to ``output - baseline_output`` (the prediction with the
    whole note minus the one with no note), exactly when ``exact``."""

    sentences: list[str]
    values: list[float]
    target: str
    output: float
    baseline_output: float
    exact: bool
    n_evaluations: int
    seconds: float = 0.0


EXACT_SHAPLEY_MAX_SENTENCES = 6


def attribute_note(
    model: LoadedModel,
    scan: Scan | None,
    record: dict[str, Any],
    note: str,
    target: str | int | None = None,
    n_samples: int = 40,
    should_stop: Callable[[], bool] | None = None,
    output: str = "probability",
) -> NoteAttribution:
    """Which sentences of ``note`` moved the ``target`` output, and how much.

    The image features are computed once (the note enters after the image
    stream); each coalition of sentences is embedded once (memoised), so an
    exact run over 6 sentences embeds at most 64 notes. ``output``:
    ``"probability"`` or ``"logit"``, as for :func:`attribute_image`."""
    import time

    from captum.attr import ShapleyValues, ShapleyValueSampling

    from ..data.notes import split_sentences

    start = time.perf_counter()
    if not model.info.config.uses_note:
        raise ExplainError(f"{model.info.name} does not read clinical notes")
    sentences = split_sentences(note)
    if not sentences:
        raise ExplainError("the note is empty: there is nothing to attribute")
    _check_output(model, output)
    info, net, device = model.info, model.net.eval(), model.device
    views = None
    if info.config.uses_image:
        if scan is None:
            raise ImageError(f"{info.name} needs an image")
        views = prepare_views(scan, _grid(model))
    if target is None:
        target = _top_class(model, views, record, note)
    k = target_index(model, target)
    features: list[dict] = [{}]
    if views is not None:
        with torch.no_grad():
            features = [net.encode_image(torch.as_tensor(v[None, None], device=device)) for v in views]
    calls = [0]

    def f(mask: torch.Tensor) -> torch.Tensor:
        if should_stop is not None and should_stop():
            raise Cancelled()
        texts = [" ".join(s for s, keep in zip(sentences, row) if keep > 0.5) for row in mask.tolist()]
        inputs = np.stack([encode_record(info.config, info.schema, record, t) for t in texts])
        tab = torch.as_tensor(inputs, device=device)
        with torch.no_grad():
            select = log_odds if output == "logit" else to_probabilities
            probs = [select(net.decode(feat, tab), info.kind)[:, k] for feat in features]
        calls[0] += 1
        return torch.stack(probs).mean(0)

    ones = torch.ones(1, len(sentences))
    exact = len(sentences) <= EXACT_SHAPLEY_MAX_SENTENCES
    if exact:
        attr = ShapleyValues(f).attribute(ones, baselines=0.0, perturbations_per_eval=64)
    else:
        attr = ShapleyValueSampling(f).attribute(ones, baselines=0.0, n_samples=n_samples, perturbations_per_eval=64)
    full = float(f(ones)[0])
    empty = float(f(torch.zeros_like(ones))[0])
    return NoteAttribution(
        sentences=sentences, values=[float(v) for v in attr[0]], target=info.outputs[k], output=full,
        baseline_output=empty, exact=exact, n_evaluations=calls[0], seconds=time.perf_counter() - start,
    )  # fmt: skip
