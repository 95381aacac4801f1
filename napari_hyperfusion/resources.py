"""Where the files that ship with the package live.

The repository keeps ``models/`` and ``sample_data/`` at its root (the
layout users see) and links them into the package with symlinks, so that
the same paths resolve in an editable install and inside an installed
wheel (which carries real files). A checkout made without symlink support
(Windows with ``core.symlinks=false``) turns those links into small text
files; the lookup then falls back to the repository root, so a source
checkout works either way. The plugin manifest is a real file inside the
package (``napari.yaml`` at the root links to it), because napari reads it
from there.

Example:
    >>> from napari_hyperfusion.resources import shipped_models
    >>> [p.stem for p in shipped_models()][:2]
    ['ad_concat', 'ad_hyperfusion']
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["package_dir", "manifest_path", "models_dir", "sample_data_dir", "shipped_models"]


def package_dir() -> Path:
    return Path(__file__).resolve().parent


def _shipped_dir(name: str) -> Path:
    """``name`` inside the package when it is a real folder (a wheel, or a
    checkout with symlinks), else the repository root's ``name``."""
    inside = package_dir() / name
    if inside.is_dir():
        return inside
    at_root = package_dir().parent / name
    return at_root if at_root.is_dir() else inside


def manifest_path() -> Path:
    """The npe2 manifest napari reads."""
    return package_dir() / "napari.yaml"


def models_dir() -> Path:
    """Shipped model files (safetensors + JSON metadata)."""
    return _shipped_dir("models")


def sample_data_dir() -> Path:
    """Shipped synthetic subjects and the template they are built on."""
    return _shipped_dir("sample_data")


def shipped_models() -> list[Path]:
    """The model files shipped in ``models/``, sorted by name."""
    return sorted(models_dir().glob("*.safetensors"))
