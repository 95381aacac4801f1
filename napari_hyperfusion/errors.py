"""The project's errors: one base class, :class:`HyperFusionError`, for every
error a user can cause and fix (a bad file, a bad value, a missing extra).

The command line catches ``HyperFusionError`` and prints its message with
exit status 2; the panel catches it and shows a napari notification. Any
other exception is a bug in napari-hyperfusion, and is reported as one.
Each subclass also derives from the built-in type it used to be (mostly
``ValueError``), so ``except ValueError`` in user code keeps working.

Example:
    >>> from napari_hyperfusion.errors import HyperFusionError, SchemaError
    >>> try:
    ...     raise SchemaError("AGE: 300 is above the maximum 120", field="AGE")
    ... except HyperFusionError as err:
    ...     print(err)
    AGE: 300 is above the maximum 120
"""

from __future__ import annotations

__all__ = [
    "HyperFusionError",
    "CLIError",
    "CohortError",
    "ConfigError",
    "DeviceError",
    "ExplainError",
    "ImageError",
    "ModelFileError",
    "NoteEncoderError",
    "PredictionError",
    "RecordError",
    "SchemaError",
    "TrainConfigError",
]


class HyperFusionError(Exception):
    """Base of every user-facing error; the message says what is wrong and
    what to do."""


class ConfigError(HyperFusionError, ValueError):
    """A model configuration that cannot be built."""


class DeviceError(HyperFusionError, RuntimeError):
    """A device was asked for that this machine or PyTorch build lacks."""


class SchemaError(HyperFusionError, ValueError):
    """A record or table does not fit the schema. ``field`` names the field."""

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class RecordError(HyperFusionError, ValueError):
    """A table that cannot give a record."""


class ImageError(HyperFusionError, ValueError):
    """A scan that cannot be used."""


class CohortError(HyperFusionError, ValueError):
    """A cohort table or one of its images cannot be used."""


class NoteEncoderError(HyperFusionError, RuntimeError):
    """The note encoder is not installed or cannot be loaded, or a note
    cannot be used."""


class ModelFileError(HyperFusionError, ValueError):
    """A file that cannot be opened as a model; ``reason`` is a short
    machine-readable cause (e.g. ``"pickle"``, ``"metadata"``)."""

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


class TrainConfigError(HyperFusionError, ValueError):
    """A training configuration that cannot be used."""


class ExplainError(HyperFusionError, ValueError):
    """An explanation that cannot be computed for this model and input
    (e.g. an image map for a model that reads no image)."""


class PredictionError(HyperFusionError, ArithmeticError):
    """A network gave no usable output (NaN or infinite values)."""


class CLIError(HyperFusionError):
    """A command-line usage problem (e.g. an output file that exists)."""
