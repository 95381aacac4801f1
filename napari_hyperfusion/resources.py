"""Where the files that ship with the package live.

``napari.yaml``, ``models/`` and ``sample_data/`` sit at the repository root
(the layout users see) and are symlinked into the package, so the same paths
resolve in an editable install and inside an installed wheel.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["package_dir", "manifest_path", "models_dir", "sample_data_dir", "shipped_models"]


def package_dir() -> Path:
    return Path(__file__).resolve().parent


def manifest_path() -> Path:
    """The npe2 manifest napari reads."""
    return package_dir() / "napari.yaml"


def models_dir() -> Path:
    """Shipped model files (safetensors + JSON metadata)."""
    return package_dir() / "models"


def sample_data_dir() -> Path:
    """Shipped synthetic subjects and the template they are built on."""
    return package_dir() / "sample_data"


def shipped_models() -> list[Path]:
    """The model files shipped in ``models/``, sorted by name."""
    return sorted(models_dir().glob("*.safetensors"))
