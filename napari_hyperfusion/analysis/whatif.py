"""What-if exploration: change the record, watch the output and the
generated weights change, live.

Everything in a network that does not depend on the EHR is computed once per
(model, scan, device) by :meth:`FusionNet.encode_image` and cached in a
:class:`WhatIfSession`; a changed record runs only ``decode`` (for the
paper's AD model: the generated 1x1x1 shortcut of block 4, pooling and the
head). Response curves decode a whole range of values of one field in one
batched call. For HyperFusion the generated layers' parameters are
exposed, and how far they move from the patient's. MedFusionNet fuses the
EHR (and the note) in its label decoder after the whole image stream, so
its cache is exact too; it generates no weights (:meth:`generated` is
empty).

Shapes: predictions ``[K]`` (class probabilities or years), curves
``[n, K]``; generated weights per layer as in the layer (e.g. ``[256, 128,
1, 1, 1]`` for the AD shortcut).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from dataclasses import field as dc_field
from typing import Any

import numpy as np
import torch

from ..data.model_inputs import encode_records
from ..data.preprocess import ModelGrid, Scan, prepare_views
from ..data.schema import Field
from ..errors import ImageError
from ..infer.cohort import to_probabilities
from ..infer.weight_map import WeightMap
from ..io.model_file import LoadedModel

__all__ = ["WhatIfSession", "ResponseCurve", "field_grid"]


@dataclass
class ResponseCurve:
    """The output over ``values`` of ``field`` (others at the record's):
    ``outputs [n, K]``; ``patient_value`` marks the record's own value."""

    field: str
    values: list[Any]
    outputs: np.ndarray
    output_names: list[str]
    patient_value: Any
    held: dict[str, Any] = dc_field(default_factory=dict)  # the other fields' values while ``field`` is swept


def field_grid(field: Field, n: int = 64) -> list[Any]:
    """Values to sweep: every category, or ``n`` numbers over the training
    mean +- 3 SD clipped to the valid range (integers deduplicated)."""
    if field.kind == "category":
        return list(field.categories)
    if field.kind == "binary":
        return [0.0, 1.0]
    low = field.mean - 3 * field.std if field.minimum is None else max(field.minimum, field.mean - 3 * field.std)
    high = field.mean + 3 * field.std if field.maximum is None else min(field.maximum, field.mean + 3 * field.std)
    values = np.linspace(low, high, n)
    if field.integer:
        values = np.unique(np.round(values))
    return [float(v) for v in values]


class WhatIfSession:
    """Cached image features of one scan under one model on one device.

    ``features``: each view's image features when the caller already has
    them (from :func:`~napari_hyperfusion.infer.subject.predict_subject_and_features`);
    otherwise the scan is resampled and encoded here.

    ``key`` identifies what the cache depends on; :meth:`matches` says
    whether it is still valid for another (model, scan id, device)."""

    def __init__(
        self,
        model: LoadedModel,
        scan: Scan | None,
        scan_id: str = "",
        note: str = "",
        features: list[dict[str, torch.Tensor]] | None = None,
    ) -> None:
        self.model = model
        self.note = note  # a model that reads notes holds the note fixed while the EHR vary
        self.net = model.net.eval()
        self.device = model.device
        self.key = (model.sha256, scan_id, str(model.device))
        self.features: list[dict[str, torch.Tensor]] = []
        self._memo: dict[tuple, Any] = {}  # per record: the patient's values are asked for on every tick
        # the weight-space map fitted on the training rows (None: a baseline, or a file made before maps)
        stored = model.info.input_stats.get("weight_map")
        self.weight_map: WeightMap | None = WeightMap.from_dict(stored) if stored else None
        with torch.no_grad():
            if features:  # the image features of the prediction's own pass (predict_subject_and_features)
                self.features = list(features)
            elif model.info.config.uses_image:
                if scan is None:
                    raise ImageError(f"{model.info.name} needs an image")
                views = prepare_views(scan, ModelGrid.from_dict(model.info.image))
                for view in views:
                    image = torch.as_tensor(view[None, None], device=self.device)
                    self.features.append(self.net.encode_image(image))
            else:
                self.features.append({})
        # all views stacked on the batch axis: one decode call serves every view
        self._stacked = {k: torch.cat([f[k] for f in self.features]) for k in self.features[0]}
        self.n_views = len(self.features)

    def matches(self, model: LoadedModel, scan_id: str) -> bool:
        return self.key == (model.sha256, scan_id, str(model.device))

    # -- predictions -----------------------------------------------------------
    def set_note(self, note: str) -> None:
        """Change the note (a cheap change: the image features stay)."""
        if note != self.note:
            self.note = note
            self._memo.clear()

    def encode_records(self, records: list[Mapping[str, Any]]) -> torch.Tensor:
        info = self.model.info
        return torch.as_tensor(encode_records(info.config, info.schema, records, self.note), device=self.device)

    @torch.no_grad()
    def predict_encoded(self, tabular: torch.Tensor) -> np.ndarray:
        """``[N, T]`` encoded records -> ``[N, K]`` (mean over views of the
        softmax, or of the regression output), by ``decode`` only."""
        n, v = tabular.shape[0], self.n_views
        if v == 1:
            out = self.net.decode(self.features[0], tabular)
        else:
            # row (view i, record j) at i * n + j
            features = {k: f.repeat_interleave(n, 0) if f.shape[0] == v else f for k, f in self._stacked.items()}
            out = self.net.decode(features, tabular.repeat(v, 1))
        out = to_probabilities(out, self.model.info.kind)
        return out.view(v, n, -1).mean(0).cpu().numpy()

    def _key(self, record: Mapping[str, Any]) -> tuple:
        return tuple(sorted((k, str(v)) for k, v in record.items()))

    def predict(self, record: Mapping[str, Any]) -> np.ndarray:
        """One record -> ``[K]`` (memoised: the same record is not decoded twice)."""
        key = ("predict", self._key(record))
        if key not in self._memo:
            if len(self._memo) > 256:
                self._memo.clear()
            self._memo[key] = self.predict_encoded(self.encode_records([record]))[0]
        return self._memo[key]

    def response_curve(self, record: Mapping[str, Any], field: str, n: int = 64) -> ResponseCurve:
        """The output over ``field``'s range in one batched decode."""
        spec = self.model.info.schema[field]
        values = field_grid(spec, n)
        records = [{**record, field: v} for v in values]
        outputs = self.predict_encoded(self.encode_records(records))
        held = {k: v for k, v in record.items() if k != field}
        return ResponseCurve(field, values, outputs, list(self.model.info.outputs), record.get(field), held)

    def response_surface(self, record: Mapping[str, Any], field_a: str, field_b: str, n: int = 24):
        """Outputs over two fields: ``(values_a, values_b, outputs [na, nb, K])``."""
        schema = self.model.info.schema
        va, vb = field_grid(schema[field_a], n), field_grid(schema[field_b], n)
        records = [{**record, field_a: a, field_b: b} for a in va for b in vb]
        outputs = self.predict_encoded(self.encode_records(records))
        return va, vb, outputs.reshape(len(va), len(vb), -1)

    # -- the weight-space map ------------------------------------------------------
    @torch.no_grad()
    def map_points(self, records: list[Mapping[str, Any]]) -> np.ndarray:
        """Where ``records``' generated weights lie on the map: ``[N, k]``
        (memoised per record, like :meth:`predict`)."""
        wmap = self.weight_map
        if wmap is None:
            raise ValueError("this model has no weight-space map")
        out = []
        for record in records:
            key = ("map", self._key(record))
            if key not in self._memo:
                self._memo[key] = wmap.project(self.net.embed(self.encode_records([record])))[0]
            out.append(self._memo[key])
        return np.stack(out)

    # -- the generated weights -------------------------------------------------
    @torch.no_grad()
    def generated(self, record: Mapping[str, Any]) -> dict[str, dict[str, np.ndarray]]:
        """Per external layer, the parameters the hypernetwork makes for
        ``record`` (``{"weight": ..., "bias": ...}``); for FiLM/DAFT the
        generated per-channel ``scale`` and ``shift`` (DAFT's depend on the
        scan too, from the cached block input)."""
        key = ("generated", self._key(record))
        if key in self._memo:
            return self._memo[key]
        tab = self.encode_records([record])
        out: dict[str, dict[str, np.ndarray]] = {}
        e = self.net.embed(tab)
        for name, layer in self.net.hyper_layers().items():
            w, b = layer.generate(e)
            out[name] = {"weight": w[0].cpu().numpy()}
            if b is not None:
                out[name]["bias"] = b[0].cpu().numpy()
        for name, module in self.net.named_modules():
            if module.__class__.__name__ == "Modulation":
                block = self.net.blocks[int(name.split(".")[1])]  # type: ignore[attr-defined]
                # what the modulation reads differs by block style (bn1(x), raw x, conv1's BN output)
                fmap = block.modulation_input(self.features[0])
                scale, shift = module.scale_shift(fmap, tab)
                out[name] = {"scale": scale[0].cpu().numpy(), "shift": shift[0].cpu().numpy()}
        self._memo[key] = out
        return out

    def channel_sensitivity(self, name: str) -> np.ndarray | None:
        """Per output channel of generated layer ``name``, how strongly the
        embedding moves its weights: the norm of the generator's rows for
        that channel, ``[out]`` (None for a layer that is not generated)."""
        layer = self.net.hyper_layers().get(name)
        if layer is None:
            return None
        a = layer.weight_gen.weight.detach()  # [prod(weight_shape), emb_dim]
        return a.reshape(layer.weight_shape[0], -1).norm(dim=1).cpu().numpy()

    def weight_change(self, reference: Mapping[str, Any], record: Mapping[str, Any]) -> dict[str, float]:
        """Relative change ``||P(record) - P(reference)|| / ||P(reference)||``
        of each external layer's generated parameters (all of them
        concatenated); 0 when the records are the same."""
        ref, new = self.generated(reference), self.generated(record)
        out = {}
        for name in ref:
            a = np.concatenate([v.ravel() for v in ref[name].values()])
            b = np.concatenate([v.ravel() for v in new[name].values()])
            out[name] = float(np.linalg.norm(b - a) / max(np.linalg.norm(a), 1e-12))
        return out
