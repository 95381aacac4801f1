"""The schema of a model file's metadata, checked before any of it is used.

A model file is data from anywhere. Its JSON metadata decides what network
is built, what the panel shows and what the CLI writes, so every value is
checked for type and bounds first (with `jsonschema`_, the reference
implementation of JSON Schema, rather than scattered ``isinstance`` tests),
and the sizes that must agree with each other are compared. Only then are
the dataclasses built and, in :func:`~napari_hyperfusion.io.model_file.load_model`,
the memory the architecture implies estimated
(:mod:`napari_hyperfusion.nn.footprint`).

Numbers in typed places must be finite: ``NaN`` and ``Infinity`` (which
Python's JSON reader accepts) are refused there, and kept where the value
is free-form (``metrics``, ``provenance``).

.. _jsonschema: https://python-jsonschema.readthedocs.io

Example:
    >>> check_metadata({"format": "napari-hyperfusion-model"})  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    napari_hyperfusion.errors.ModelFileError: model metadata: 'format_version' is a required property ...
"""

from __future__ import annotations

import math
from typing import Any

from ..errors import ModelFileError

__all__ = ["METADATA_SCHEMA", "MAX_DEPTH", "check_metadata", "json_depth"]

MAX_DEPTH = 32  # our files nest 6 deep; a deeper document is refused before it is walked


def _integer(low: int, high: int) -> dict:
    return {"type": "integer", "minimum": low, "maximum": high}


def _number(low: float | None = None, high: float | None = None, exclusive_low: bool = False) -> dict:
    rule: dict[str, Any] = {"type": "number"}
    if low is not None:
        rule["exclusiveMinimum" if exclusive_low else "minimum"] = low
    if high is not None:
        rule["maximum"] = high
    return rule


def _text(max_length: int = 200, min_length: int = 0) -> dict:
    return {"type": "string", "minLength": min_length, "maxLength": max_length}


def _array(items: dict, max_items: int, min_items: int = 0) -> dict:
    return {"type": "array", "items": items, "minItems": min_items, "maxItems": max_items}


_SHAPE = _array(_integer(1, 1024), 3, 3)
_NUMBERS = _array(_number(), 100_000)

_CONFIG = {
    "type": "object",
    "properties": {
        "backbone": _text(64), "fusion": _text(64), "embedding": _text(64), "hyper_form": _text(64),
        "block_style": _text(64), "modulation_style": _text(64),
        "tabular_dim": _integer(1, 4096), "n_outputs": _integer(1, 1000), "input_shape": _SHAPE,
        "in_channels": _integer(1, 16), "hyper_sites": _array(_text(64), 64),
        "emb_dim": _integer(1, 4096), "base_filters": _integer(1, 1024), "dropout": _number(0, 1),
        "head_hidden": _integer(1, 65536), "modulation_hidden": _integer(1, 65536),
        "output_shift": _number(-1e6, 1e6), "output_scale": _number(-1e6, 1e6),
        "tabular_columns": {"anyOf": [{"type": "null"}, _array(_integer(0, 4095), 4096)]},
        "note_dim": _integer(0, 65536), "growth": _integer(1, 1024), "dense_layers": _integer(1, 64),
        "attn_dim": _integer(1, 65536), "attn_heads": _integer(1, 256),
    },
}  # fmt: skip

_FIELD = {
    "type": "object",
    "required": ["name", "kind"],
    "properties": {
        "name": _text(100, 1), "kind": _text(32), "label": _text(200), "unit": _text(64),
        "minimum": {"anyOf": [{"type": "null"}, _number()]}, "maximum": {"anyOf": [{"type": "null"}, _number()]},
        "integer": {"type": "boolean"}, "categories": _array(_text(200), 256),
        "aliases": {"type": "object", "additionalProperties": _text(200), "maxProperties": 1024},
        "fill": _text(32), "missing_indicator": {"type": "boolean"}, "mean": _number(), "std": _number(0, None, True),
        "fill_value": {"anyOf": [{"type": "null"}, _number(), _text(200)]}, "description": _text(2000),
    },
}  # fmt: skip

_SCHEMA = {
    "type": "object",
    "required": ["fields"],
    "properties": {
        "fields": _array(_FIELD, 512, 1),
        "joint_mean": _NUMBERS,
        "joint_cov": _array(_NUMBERS, 4096),
        "fitted_on": _text(2000),
    },
}

_IMAGE_REQUIRED = ("crop", "shape", "spacing_mm")
_IMAGE = {  # {} for a model that reads no image; else _IMAGE_REQUIRED (checked in _check_agreement)
    "type": "object",
    "properties": {
        "space": _text(64), "crop": _text(64), "shape": _SHAPE, "spacing_mm": _number(0, 50, True),
        "normalization": _text(64),
        "views": _array({"type": "object", "required": ["name", "affine"],
                         "properties": {"name": _text(200), "affine": _array(_array(_number(), 4, 4), 4, 4)}}, 8),
    },
}  # fmt: skip

_RANGE = {  # a category's levels, or a number's range and percentiles
    "type": "object",
    "anyOf": [{"required": ["levels"]}, {"required": ["min", "max", "p1", "p99"]}],
    "properties": {
        "min": _number(), "max": _number(), "p1": _number(), "p99": _number(), "levels": _array(_text(200), 256),
    },
}  # fmt: skip

_INPUT_STATS = {
    "type": "object",
    "properties": {
        "fitted_on": _text(2000),
        "ehr": {"type": "object", "additionalProperties": _RANGE, "maxProperties": 512},
        "image": {
            "type": "object",
            "required": ["mean", "components", "variances", "distance_quantiles"],
            "properties": {
                "mean": _array(_number(), 65536, 1), "components": _array(_array(_number(), 65536), 64),
                "variances": _array(_number(0), 64), "distance_quantiles": _array(_number(), 1000, 1),
                "n": _integer(0, 10**9), "residual_var": _number(0),
            },
        },
        "scan": {
            "type": "object",
            "properties": {
                "n": _integer(0, 10**9), "ncc_p1": _number(-1, 1), "sharpness": _array(_number(), 2, 2),
                "voxel_mm_max": _number(0, 50, True),
            },
        },
        "age_bias": {  # infer/age_bias.py: the held-out age trend of a brain-age model
            "type": "object",
            "required": ["intercept", "slope", "n", "age_range"],
            "properties": {
                "intercept": _number(-1000, 1000), "slope": _number(0.1, 10), "n": _integer(1, 10**9),
                "age_range": _array(_number(0, 200), 2, 2), "fitted_on": _text(2000),
            },
        },
        "whatif_fidelity": {  # analysis/slider_trust.py: each slider against the generator's truth
            "type": "object",
            "required": ["subjects", "regression", "fields"],
            "properties": {
                "subjects": _integer(1, 10**7), "checked_on": _text(2000), "regression": {"type": "boolean"},
                "fields": {"type": "object", "maxProperties": 512, "propertyNames": _text(64, 1), "additionalProperties": {
                    "type": "object",
                    "required": ["curves", "effect_model", "effect_truth", "truth_moves", "wrong_sign"],
                    "properties": {
                        "curves": _integer(1, 10**7), "mean_abs_diff": _number(0), "effect_model": _number(0),
                        "effect_truth": _number(0), "truth_moves": _integer(0, 10**7), "wrong_sign": _integer(0, 10**7),
                    },
                }},
            },
        },
        "weight_map": {  # infer/weight_map.py; projection [k, emb_dim] must match mean [emb_dim]
            "type": "object",
            "required": ["mean", "projection", "explained", "points"],
            "properties": {
                "mean": _array(_number(), 4096, 1), "projection": _array(_array(_number(), 4096, 1), 2, 1),
                "explained": _array(_number(0, 1), 2, 1), "points": _array(_array(_number(), 2, 1), 1000),
                "targets": _array({"anyOf": [_text(200), _number()]}, 1000), "target_kind": {"enum": ["class", "number"]},
                "target_name": _text(200),
                "layers": _array(_text(200), 64), "n_parameters": _integer(0, 2**40), "fitted_on": _text(2000),
            },
        },
    },
}  # fmt: skip

_SELECTION = {
    "type": "object",
    "properties": {
        "tests": _array({"type": "object", "required": ["field", "label", "kept"]}, 100_000),
        "labels": _array(_text(200), 1000), "top_n": _integer(0, 10_000), "alpha": _number(0, 1),
        "correction": _text(64), "fitted_on": _text(2000),
    },
}  # fmt: skip

METADATA_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "napari-hyperfusion model metadata",
    "type": "object",
    "required": ["format", "format_version", "name", "task", "config", "schema", "outputs"],
    "properties": {
        "format": {"type": "string"},
        "format_version": _integer(0, 10**6),
        "name": _text(1000, 1),  # shown wrapped; a bound, not a style rule
        "task": _text(64),
        "description": _text(20_000),
        "config": _CONFIG,
        "schema": _SCHEMA,
        "outputs": {
            "type": "object",
            "required": ["names"],
            "properties": {"names": _array(_text(200, 1), 1000, 1), "unit": _text(64)},
        },
        "flags": {
            "type": "object",
            "properties": {"synthetic_data": {"type": "boolean"}, "research_use_only": {"type": "boolean"}},
        },
        "image": _IMAGE,
        "metrics": {"type": "object"},
        "provenance": {"type": "object"},
        "thresholds": _array(_number(0, 1), 1000),
        "feature_selection": _SELECTION,
        "note_encoder": _text(500),
        "input_stats": _INPUT_STATS,
    },
}


def json_depth(value: Any) -> int:
    """Nesting depth of a parsed JSON value (a scalar is 0), walked without
    recursion so that a crafted document cannot exhaust the stack."""
    depth, stack = 0, [(value, 0)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, dict):
            children = item.values()
        elif isinstance(item, list):
            children = item
        else:
            depth = max(depth, level)
            continue
        depth = max(depth, level + 1)
        if level + 1 > MAX_DEPTH:
            return level + 1
        stack.extend((child, level + 1) for child in children)
    return depth


def _validator():
    import jsonschema

    base = jsonschema.Draft202012Validator

    def finite_number(_checker, value) -> bool:
        if not base.TYPE_CHECKER.is_type(value, "number"):
            return False
        if isinstance(value, int):  # beyond 2**53 numpy keeps it as a Python object, not a float
            return abs(value) <= 2**53
        return math.isfinite(value)

    def safe_integer(_checker, value) -> bool:  # bounds apply only to values that are also "number"s
        return base.TYPE_CHECKER.is_type(value, "integer") and finite_number(_checker, value)

    checker = base.TYPE_CHECKER.redefine_many({"number": finite_number, "integer": safe_integer})
    return jsonschema.validators.extend(base, type_checker=checker)(METADATA_SCHEMA)


def _where(error) -> str:
    return ".".join(str(p) for p in error.absolute_path) or "the metadata"


def check_metadata(data: Any) -> None:
    """Check a parsed metadata document against :data:`METADATA_SCHEMA` and
    for sizes that must agree.

    Args:
        data: the JSON-decoded ``napari_hyperfusion`` metadata.

    Raises:
        ModelFileError: ``reason="bad_metadata"``; the message names the
            first offending value by its path, e.g. ``config.base_filters``.
    """
    if not isinstance(data, dict):
        raise ModelFileError(f"model metadata: a JSON object was expected, got {type(data).__name__}", "bad_metadata")
    if json_depth(data) > MAX_DEPTH:
        raise ModelFileError(f"model metadata: nested deeper than {MAX_DEPTH} levels", "bad_metadata")
    errors = sorted(_validator().iter_errors(data), key=lambda e: list(map(str, e.absolute_path)))
    if errors:
        first = errors[0]
        message = first.message if len(first.message) < 300 else first.message[:300] + "..."
        if first.validator == "type" and first.validator_value in ("number", "integer"):
            value = first.instance
            if isinstance(value, int) and not isinstance(value, bool) and abs(value) > 2**53:
                message = f"{str(value)[:40]} is too large (beyond 2**53)"
            elif isinstance(value, float) and not math.isfinite(value):
                message = f"{value!r} is not a finite number"
        more = f" (and {len(errors) - 1} more problem(s))" if len(errors) > 1 else ""
        raise ModelFileError(f"model metadata: {_where(first)}: {message}{more}", "bad_metadata")
    _check_agreement(data)


def _check_agreement(data: dict) -> None:
    """Sizes the schema cannot relate: the grid the image section describes
    is the network's input; the typicality statistics are one subspace."""

    def refuse(message: str) -> None:
        raise ModelFileError(f"model metadata: {message}", "bad_metadata")

    config, image = data["config"], data.get("image") or {}
    absent = [key for key in _IMAGE_REQUIRED if image and key not in image]
    if absent:
        refuse(f"image: the grid lacks {', '.join(absent)}")
    if image and "input_shape" in config and list(image["shape"]) != list(config["input_shape"]):
        refuse(f"image.shape {image['shape']} differs from the network's input_shape {config['input_shape']}")
    stats = (data.get("input_stats") or {}).get("image")
    if stats:
        width = len(stats["mean"])
        if any(len(row) != width for row in stats["components"]):
            refuse(f"input_stats.image.components: every component needs {width} values, like the mean")
        if len(stats["variances"]) != len(stats["components"]):
            refuse("input_stats.image: one variance per component is needed")
    wmap = (data.get("input_stats") or {}).get("weight_map")
    if wmap:
        width, k = len(wmap["mean"]), len(wmap["projection"])
        if "emb_dim" in config and width != config["emb_dim"]:
            refuse(f"input_stats.weight_map.mean has {width} values; the network's embedding has {config['emb_dim']}")
        if any(len(row) != width for row in wmap["projection"]) or len(wmap["explained"]) != k:
            refuse(f"input_stats.weight_map: every axis needs {width} values and one explained share")
        if any(len(p) != k for p in wmap["points"]) or len(wmap.get("targets", wmap["points"])) != len(wmap["points"]):
            refuse(f"input_stats.weight_map.points: {k} coordinates and one target per point are needed")
