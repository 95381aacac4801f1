"""The plugin as napari finds it: from the editable install and from a wheel
installed into a fresh virtual environment (offline: the throwaway
environment sees this environment's dependencies through a .pth file, but
not its editable napari-hyperfusion)."""

from __future__ import annotations

import json
import subprocess
import sys
import sysconfig
import venv
from pathlib import Path


REPO = Path(__file__).resolve().parents[1]
CHECK = Path(__file__).with_name("install_check.py")


def run_check(python: str | Path, cwd: Path) -> dict:
    # cwd outside the repository so that the source tree cannot be imported by accident
    proc = subprocess.run([str(python), str(CHECK)], capture_output=True, text=True, cwd=cwd, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_editable_install_is_discovered_with_its_data(tmp_path):
    report = run_check(sys.executable, tmp_path)
    assert report["discovered_by_napari"] and report["manifest_name"] == "napari-hyperfusion"
    assert "README.md" in report["models"] and "README.md" in report["sample_data"]


def test_manifest_validates_with_npe2_cli():
    npe2 = Path(sys.executable).with_name("npe2")
    proc = subprocess.run([str(npe2), "validate", "napari-hyperfusion", "--imports"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "valid" in proc.stdout


def _dependency_view(tmp_path: Path) -> Path:
    """A folder of symlinks to this environment's site-packages, minus
    napari-hyperfusion itself."""
    site = Path(sysconfig.get_paths()["purelib"])
    view = tmp_path / "deps"
    view.mkdir()
    for entry in site.iterdir():
        if "napari_hyperfusion" in entry.name or "napari-hyperfusion" in entry.name:
            continue
        (view / entry.name).symlink_to(entry)
    return view


def test_wheel_in_a_fresh_venv_is_discovered_with_its_data(tmp_path):
    dist = tmp_path / "dist"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(dist), str(REPO)],
        check=True,
        timeout=300,
    )
    (wheel,) = dist.glob("napari_hyperfusion-*.whl")
    env = tmp_path / "venv"
    venv.EnvBuilder(with_pip=False).create(env)
    python = env / "bin" / "python"
    env_site = Path(
        subprocess.check_output([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], text=True).strip()
    )
    view = _dependency_view(tmp_path)
    (env_site / "_deps_view.pth").write_text(f"import site; site.addsitedir({str(view)!r})\n")
    subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "--no-index", "-q", str(wheel)],
        check=True,
        timeout=300,
    )
    report = run_check(python, tmp_path)
    assert Path(report["package_file"]).is_relative_to(env), report["package_file"]
    assert Path(report["manifest_path"]).is_relative_to(env)
    assert report["discovered_by_napari"]
    assert "README.md" in report["models"] and "README.md" in report["sample_data"]


def test_napari_viewer_lists_the_plugin(make_napari_viewer):
    from npe2 import PluginManager

    make_napari_viewer()
    assert "napari-hyperfusion" in {m.name for m in PluginManager.instance().iter_manifests()}
