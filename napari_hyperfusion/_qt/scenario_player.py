"""The Lecture tab: step through a scenario (analysis/scenario.py) with
PageDown / PageUp, or the Next / Back buttons.

Every step is shown as the state the steps up to it imply (the subject, the
model, the what-if values, the curve, the plane), so Back is exact and a
step can be shown twice. A step that changes the subject or the model
predicts first (in the panel's worker, with its progress bar) and applies
the rest when the prediction is in. What the player may do to the panel is
the :class:`ScenarioActions` it is given.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from qtpy.QtCore import Qt
from qtpy.QtWidgets import QComboBox, QFileDialog, QHBoxLayout, QLabel, QPushButton, QVBoxLayout, QWidget

from ..analysis.scenario import Scenario, ScenarioError, check_values, load_scenario
from ..errors import HyperFusionError
from . import notify

__all__ = ["ScenarioPlayer", "ScenarioActions", "StepState", "shipped_scenarios"]

OPEN_FILE = "Open a scenario file..."


def shipped_scenarios() -> list[Path]:
    from ..resources import sample_data_dir

    return sorted((sample_data_dir() / "scenarios").glob("*.yaml"))


@dataclass
class ScenarioActions:
    """What a scenario may do, given by the panel."""

    open_subject: Callable[[str], bool]  # open / choose a sample subject; True when the case changed
    open_model: Callable[[str], bool]  # a shipped model's name or a path; True when it changed
    predict: Callable[[Callable[[], None]], None]  # predict, then call back on the UI thread
    schema: Callable[[], Any]  # the current model's schema
    set_whatif: Callable[[dict[str, Any]], None]  # the patient's values, then these
    curve: Callable[[str | None], None]  # None: no curve (a step before the one that draws it)
    truth: Callable[[bool], None]  # the ground-truth curve on or off
    plane: Callable[[str], None]
    overlay: Callable[[str | None], None]  # None: remove the scan's maps (a step before the one that made them)
    caption: Callable[[str], None] = lambda text: None  # the step's text where it stays in view


@dataclass
class StepState:
    """What the screen should show at a step: the fold of the steps up to it."""

    subject: str | None = None
    model: str | None = None
    values: dict[str, Any] = field(default_factory=dict)
    curve: str | None = None
    plane: str | None = None
    overlay: str | None = None
    truth: bool = False
    say: str = ""


def state_at(scenario: Scenario, index: int) -> StepState:
    """The state after steps ``0..index``."""
    state = StepState(model=scenario.model)
    for k, step in enumerate(scenario.steps[: index + 1]):
        if step.subject is not None and step.subject != state.subject:
            state.subject, state.values, state.curve, state.truth = step.subject, {}, None, False  # starts plain
        if step.model is not None:
            state.model = step.model
        if step.reset:
            state.values = {}
        state.values = {**state.values, **step.set}
        state.curve = step.curve or state.curve
        state.plane = step.plane or state.plane
        state.truth = state.truth if step.truth is None else step.truth
        state.overlay = step.overlay if k == index else None  # a map is made by the step that asks for it
        state.say = step.say
    return state


class ScenarioPlayer(QWidget):
    """Scenario choice, the step's text in large type, Back / Next."""

    def __init__(self, actions: ScenarioActions, viewer: Any = None, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.actions = actions
        self.scenario: Scenario | None = None
        self.index = -1
        self._shown: StepState | None = None
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        self.choice = QComboBox()
        self.choice.setObjectName("scenario_choice")
        self._paths = shipped_scenarios()
        for path in self._paths:
            self.choice.addItem(path.stem.replace("_", " "))
        self.choice.addItem(OPEN_FILE)
        self.start_button = QPushButton("Start")
        row = QHBoxLayout()
        row.addWidget(self.choice, 1)
        row.addWidget(self.start_button)
        layout.addLayout(row)
        self.title = QLabel("Choose a scenario and click Start; then PageDown / PageUp step through it.")
        self.title.setTextFormat(Qt.TextFormat.PlainText)
        self.title.setWordWrap(True)
        layout.addWidget(self.title)
        self.text = QLabel()
        self.text.setObjectName("scenario_text")
        self.text.setTextFormat(Qt.TextFormat.PlainText)  # a scenario file's text, shown as written
        self.text.setWordWrap(True)
        self.text.setStyleSheet("font-size: 15pt;")  # read from the back of a lecture hall
        layout.addWidget(self.text)
        nav = QHBoxLayout()
        self.back_button = QPushButton("Back (PageUp)")
        self.next_button = QPushButton("Next (PageDown)")
        nav.addWidget(self.back_button)
        nav.addWidget(self.next_button)
        layout.addLayout(nav)
        self.start_button.clicked.connect(self._on_start)
        self.back_button.clicked.connect(self.back)
        self.next_button.clicked.connect(self.next)
        if viewer is not None:  # the keys work wherever the focus is in the viewer
            viewer.bind_key("PageDown", lambda v: self.next(), overwrite=True)
            viewer.bind_key("PageUp", lambda v: self.back(), overwrite=True)
        self._update_buttons()

    # -- loading --------------------------------------------------------------
    def _on_start(self) -> None:
        index = self.choice.currentIndex()
        if self.choice.currentText() == OPEN_FILE:
            path, _ = QFileDialog.getOpenFileName(self, "Open a scenario", "", "Scenarios (*.yaml *.yml *.json)")
            if not path:
                return
        else:
            path = self._paths[index]
        if self.load(path):
            self.go(0)

    def load(self, path: str | Path) -> bool:
        """Read a scenario; on a bad file say why and keep the current one."""
        try:
            scenario = load_scenario(path)  # subjects are checked when a step opens one
        except ScenarioError as err:
            notify.error(f"Cannot use the scenario: {err}")
            return False
        self.scenario, self.index, self._shown = scenario, -1, None
        self.title.setText(f"{scenario.title} ({len(scenario.steps)} steps)")
        self._update_buttons()
        return True

    # -- stepping ---------------------------------------------------------------
    def next(self) -> None:
        if self.scenario is not None and self.index + 1 < len(self.scenario.steps):
            self.go(self.index + 1)

    def back(self) -> None:
        if self.scenario is not None and self.index > 0:
            self.go(self.index - 1)

    def go(self, index: int) -> None:
        """Show step ``index`` (0-based)."""
        assert self.scenario is not None
        state = state_at(self.scenario, index)
        where = f"{Path(self.scenario.source).name}, step {index + 1}"
        try:
            changed = self.actions.open_model(state.model) if state.model else False
            if state.subject is not None:
                changed = self.actions.open_subject(state.subject) or changed
            check_values(self.scenario.steps[index], self.actions.schema(), where)
        except HyperFusionError as err:  # a step the current model cannot take: say so, stay
            notify.error(f"Cannot show this step: {err}")
            return
        self.index = index
        self.text.setText(f"Step {index + 1} of {len(self.scenario.steps)}: {state.say}")
        self.actions.caption(self.text.text())  # stays in view while the step's tab is shown
        self._update_buttons()
        needs_prediction = changed or self._shown is None
        self._shown = state
        if needs_prediction:
            self.actions.predict(lambda: self._apply(state))
        else:
            self._apply(state)

    def _apply(self, state: StepState) -> None:
        if state is not self._shown:  # another step was chosen while predicting
            return
        if state.plane:
            self.actions.plane(state.plane)
        # every part of the view is set, also to "none": Back shows exactly what the forward pass showed
        self.actions.set_whatif(state.values)
        self.actions.truth(state.truth)
        self.actions.curve(state.curve)
        self.actions.overlay(state.overlay)

    def _update_buttons(self) -> None:
        steps = len(self.scenario.steps) if self.scenario is not None else 0
        self.back_button.setEnabled(self.index > 0)
        self.next_button.setEnabled(0 <= self.index + 1 < steps and self.index >= 0)
