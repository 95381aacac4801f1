"""Text from files, shown as text: never as markup.

Qt guesses whether a string is rich text (``Qt::mightBeRichText``) for
labels made by ``QFormLayout.addRow(str, ...)`` and for tooltips, and
matplotlib reads ``$...$`` as mathematics. A model file's field names,
output names and descriptions go through these helpers, so ``<b>`` stays
``<b>`` on screen and a stray ``$`` cannot break a figure.
"""

from __future__ import annotations

import html

from matplotlib import rc_context
from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
from matplotlib.figure import Figure
from matplotlib.text import Text
from qtpy.QtCore import Qt
from qtpy.QtWidgets import QLabel

__all__ = ["plain_label", "plain_tooltip", "PlainCanvas", "without_math"]


def plain_label(text: str, wrap: bool = False) -> QLabel:
    """A label that shows ``text`` literally."""
    label = QLabel(text)
    label.setTextFormat(Qt.TextFormat.PlainText)
    label.setWordWrap(wrap)
    return label


def plain_tooltip(text: str) -> str:
    """A tooltip string that shows ``text`` literally (Qt renders a tooltip
    that looks like HTML as HTML; an escaped paragraph is always rich text
    whose content is the literal text)."""
    return f"<p style='white-space:pre-wrap'>{html.escape(text)}</p>"


def without_math(figure: Figure) -> None:
    """Turn mathtext off on every text of ``figure`` made so far."""
    for text in figure.findobj(Text):
        text.set_parse_math(False)


class PlainCanvas(FigureCanvasQTAgg):
    """A Qt figure canvas whose texts are never parsed as mathtext: those
    that exist are switched off before each draw, and tick labels made
    during the draw are made with ``text.parse_math`` off."""

    def scale_text(self, scale: float) -> None:
        """Draw the figure's text and lines ``scale`` times larger in the
        same widget (lecture size): the figure's dots per inch grow and its
        size in inches shrinks to match (Qt resizes keep that dpi)."""
        figure = self.figure
        if not hasattr(self, "_base_dpi"):
            self._base_dpi = figure.dpi
        figure.set_dpi(self._base_dpi * scale)
        pixels = self.width() * self.device_pixel_ratio, self.height() * self.device_pixel_ratio
        figure.set_size_inches(pixels[0] / figure.dpi, pixels[1] / figure.dpi, forward=False)
        self.draw_idle()

    def draw(self) -> None:
        without_math(self.figure)
        with rc_context({"text.parse_math": False}):
            super().draw()
