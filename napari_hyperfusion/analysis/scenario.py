"""Lecture scenarios: a sequence of steps a teacher writes once and steps
through with the keyboard.

A scenario is a small YAML (or JSON) file::

    title: Age and the same brain
    model: ad_hyperfusion            # a shipped model's name (or a .safetensors path)
    steps:
      - subject: SYN_DEMO_04         # a sample subject: opened, its record loaded, predicted
        plane: axial                 # axial, coronal or sagittal (optional)
        say: A 74-year-old man with mild impairment; no CSF was measured.
      - set: {AGE: 85}               # what-if values (the fields the model reads)
        curve: AGE                   # a response curve over a field (optional)
        truth: true                  # the generator's exact answer beside it (synthetic subjects)
        say: Ten years older, the same brain.
      - reset: true                  # back to the patient's own values
        overlay: saliency            # an image map (saliency, gradcam, integrated_gradients, occlusion)

Each step keeps what the step before left, and changes what it names. The
file is read with ``yaml.safe_load`` (no code in it can run) and checked in
full before the first step: unknown keys, subjects, planes, overlays, and
values that are not numbers or names are refused with the step's number.
Field names and their values are checked against the model when a step is
applied (:func:`check_values`).

Example:
    >>> scenario = load_scenario("sample_data/scenarios/age_and_the_same_brain.yaml")  # doctest: +SKIP
    >>> scenario.steps[1].set  # doctest: +SKIP
    {'AGE': 85.0}
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..data.schema import TabularSchema
from ..errors import HyperFusionError

__all__ = ["Scenario", "Step", "ScenarioError", "load_scenario", "check_values", "PLANES", "OVERLAYS"]

PLANES = ("axial", "coronal", "sagittal")
OVERLAYS = ("saliency", "gradcam", "integrated_gradients", "occlusion")
_STEP_KEYS = {"subject", "set", "reset", "curve", "plane", "overlay", "say", "model", "truth"}
MAX_STEPS = 200
MAX_TEXT = 2000


class ScenarioError(HyperFusionError):
    """A scenario file that cannot be stepped through (the message names the step)."""


@dataclass
class Step:
    """One step; ``None`` (or empty) keeps what the step before left."""

    say: str = ""
    subject: str | None = None
    model: str | None = None
    set: dict[str, Any] = field(default_factory=dict)
    reset: bool = False
    curve: str | None = None
    plane: str | None = None
    overlay: str | None = None
    truth: bool | None = None  # show the ground-truth curve (None: as the step before)


@dataclass
class Scenario:
    title: str
    model: str
    steps: list[Step]
    source: str = ""


def _text(value: Any, where: str, most: int = MAX_TEXT) -> str:
    if not isinstance(value, str):
        raise ScenarioError(f"{where} must be text, got {type(value).__name__}")
    if len(value) > most:
        raise ScenarioError(f"{where} is {len(value)} characters; at most {most}")
    return value


def load_scenario(path: str | os.PathLike, subjects: tuple[str, ...] | None = None) -> Scenario:
    """Read and check a scenario file.

    Args:
        path: a ``.yaml``, ``.yml`` or ``.json`` file.
        subjects: the sample subjects a step may name (``None``: not checked
            here; the player checks when it opens them).

    Returns:
        The :class:`Scenario`.

    Raises:
        ScenarioError: the file cannot be read, or a step is malformed (the message names it).
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise ScenarioError(f"{path.name}: cannot be read ({err})") from None
    if len(text) > 1_000_000:
        raise ScenarioError(f"{path.name} is {len(text):,} characters; a scenario is a few steps")
    try:
        if path.suffix.lower() == ".json":
            data = json.loads(text)
        else:
            import yaml

            data = yaml.safe_load(text)
    except (ValueError, RecursionError) as err:  # json.JSONDecodeError is a ValueError
        raise ScenarioError(f"{path.name} is not valid JSON: {str(err)[:200]}") from None
    except Exception as err:  # noqa: BLE001 - yaml.YAMLError and its kin: "not a scenario"
        raise ScenarioError(f"{path.name} is not valid YAML: {str(err)[:200]}") from None
    if not isinstance(data, dict):
        raise ScenarioError(f"{path.name}: expected 'title', 'model' and 'steps' at the top level")
    unknown = set(data) - {"title", "model", "steps"}
    if unknown:
        raise ScenarioError(f"{path.name}: unknown key(s) {', '.join(sorted(map(str, unknown)))}")
    steps_data = data.get("steps")
    if not isinstance(steps_data, list) or not steps_data:
        raise ScenarioError(f"{path.name}: 'steps' must be a list of at least one step")
    if len(steps_data) > MAX_STEPS:
        raise ScenarioError(f"{path.name}: {len(steps_data)} steps; at most {MAX_STEPS}")
    steps = [_step(item, f"{path.name}, step {i + 1}", subjects) for i, item in enumerate(steps_data)]
    if steps[0].subject is None:
        raise ScenarioError(f"{path.name}, step 1: the first step names a 'subject'")
    title = _text(data.get("title", path.stem), f"{path.name}: title", 200)
    model = _text(data.get("model", "ad_hyperfusion"), f"{path.name}: model", 500)
    return Scenario(title=title, model=model, steps=steps, source=str(path))


def _step(item: Any, where: str, subjects: tuple[str, ...] | None) -> Step:
    if not isinstance(item, dict):
        raise ScenarioError(f"{where}: a step is a mapping such as {{say: ..., set: {{AGE: 80}}}}")
    unknown = set(item) - _STEP_KEYS
    if unknown:
        raise ScenarioError(
            f"{where}: unknown key(s) {', '.join(sorted(map(str, unknown)))}; use {', '.join(sorted(_STEP_KEYS))}"
        )
    step = Step(say=_text(item.get("say", ""), f"{where}: say"))
    if "subject" in item:
        step.subject = _text(item["subject"], f"{where}: subject", 100)
        if subjects is not None and step.subject not in subjects:
            raise ScenarioError(f"{where}: unknown subject {step.subject!r}; the samples are {', '.join(subjects)}")
    if "model" in item:
        step.model = _text(item["model"], f"{where}: model", 500)
    values = item.get("set", {})
    if not isinstance(values, dict):
        raise ScenarioError(f"{where}: 'set' maps field names to values, e.g. {{AGE: 85, APOE4: 2}}")
    for name, value in values.items():
        if not isinstance(name, str):
            raise ScenarioError(f"{where}: field names are text, got {name!r}")
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            raise ScenarioError(f"{where}: {name} = {value!r} is not a number or a category")
        step.set[name] = float(value) if isinstance(value, (int, float)) else value
    step.reset = bool(item.get("reset", False))
    for key, allowed in (("plane", PLANES), ("overlay", OVERLAYS)):
        if key in item:
            value = _text(item[key], f"{where}: {key}", 64)
            if value not in allowed:
                raise ScenarioError(f"{where}: {key} {value!r} is not one of {', '.join(allowed)}")
            setattr(step, key, value)
    if "curve" in item:
        step.curve = _text(item["curve"], f"{where}: curve", 100)
    if "truth" in item:
        if not isinstance(item["truth"], bool):
            raise ScenarioError(f"{where}: truth is true or false, got {item['truth']!r}")
        step.truth = item["truth"]
    return step


def check_values(step: Step, schema: TabularSchema, where: str = "") -> None:
    """Refuse a step whose fields the model does not read, or whose values
    are outside the fields' valid ranges (a typo must not move a slider to
    its end silently).

    Raises:
        ScenarioError: naming the field and the step.
    """
    names = set(schema.names)
    for name, value in step.set.items():
        if name not in names:
            raise ScenarioError(f"{where}: the model reads no field {name!r}; it reads {', '.join(schema.names)}")
        try:
            schema[name].parse(value)
        except HyperFusionError as err:
            raise ScenarioError(f"{where}: {err}") from None
    if step.curve is not None and step.curve not in names:
        raise ScenarioError(f"{where}: no response curve over {step.curve!r}: the model reads no such field")
