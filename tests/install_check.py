"""Check an installed napari-hyperfusion the way napari sees it.

Run with the interpreter of the environment to check; prints a JSON report
and exits non-zero if napari does not discover the plugin or the manifest
does not validate. Used by tests/test_packaging.py for the editable install
and for a wheel installed into a throwaway virtual environment.
"""

from __future__ import annotations

import json
import sys


def main() -> int:
    from napari.plugins import _initialize_plugins
    from npe2 import PluginManager, PluginManifest

    import napari_hyperfusion
    from napari_hyperfusion import resources

    # npe2 validates the manifest on load (pydantic); a bad one raises here
    manifest = PluginManifest.from_distribution("napari-hyperfusion")
    _initialize_plugins()  # napari's own plugin discovery
    pm = PluginManager.instance()
    discovered = [m.name for m in pm.iter_manifests()]
    report = {
        "package_file": napari_hyperfusion.__file__,
        "version": napari_hyperfusion.__version__,
        "manifest_name": manifest.name,
        "manifest_path": str(resources.manifest_path()),
        "manifest_is_file": resources.manifest_path().is_file(),
        "discovered_by_napari": "napari-hyperfusion" in discovered,
        "models": sorted(p.name for p in resources.models_dir().iterdir()),
        "sample_data": sorted(p.name for p in resources.sample_data_dir().iterdir()),
    }
    print(json.dumps(report))
    return 0 if report["discovered_by_napari"] and report["manifest_is_file"] else 1


if __name__ == "__main__":
    sys.exit(main())
