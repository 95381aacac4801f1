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
    _assert_ships_real_files_and_notices(wheel)
    env = tmp_path / "venv"
    venv.EnvBuilder(with_pip=False).create(env)
    python = env / "bin" / "python"
    env_site = Path(
        subprocess.check_output(
            [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], text=True
        ).strip()
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


def _assert_ships_real_files_and_notices(wheel: Path) -> None:
    import zipfile

    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        manifest = archive.read("napari_hyperfusion/napari.yaml").decode()
    assert "name: napari-hyperfusion" in manifest  # the manifest itself, not a link's text
    for notice in ("LICENSE", "THIRD_PARTY_NOTICES.md", "LICENSE_MNI152.txt"):
        ends = (f".dist-info/licenses/{notice}", f"licenses/sample_data/template/{notice}")
        assert any(n.endswith(ends) for n in names), f"{notice} not in the wheel"
    assert "napari_hyperfusion/models/ad_hyperfusion.safetensors" in names
    assert "napari_hyperfusion/sample_data/template/mni152_2009a_2mm_t1.nii.gz" in names


def test_sdist_carries_the_sources_data_and_notices(tmp_path):
    import tarfile

    subprocess.run(
        [str(Path(sys.executable).with_name("hatchling")), "build", "-t", "sdist", "-d", str(tmp_path)],
        cwd=REPO, check=True, timeout=300, capture_output=True,
    )  # fmt: skip
    (sdist,) = tmp_path.glob("napari_hyperfusion-*.tar.gz")
    with tarfile.open(sdist) as archive:
        members = {m.name.split("/", 1)[1]: m for m in archive.getmembers() if "/" in m.name}
    for path in ("LICENSE", "THIRD_PARTY_NOTICES.md", "napari_hyperfusion/napari.yaml", "README.md",
                 "models/ad_hyperfusion.safetensors", "sample_data/template/LICENSE_MNI152.txt"):  # fmt: skip
        assert path in members, f"{path} not in the sdist"
    assert members["napari_hyperfusion/napari.yaml"].isfile()


def test_napari_viewer_lists_the_plugin(make_napari_viewer):
    from npe2 import PluginManager

    make_napari_viewer()
    assert "napari-hyperfusion" in {m.name for m in PluginManager.instance().iter_manifests()}


def test_a_checkout_without_symlinks_finds_its_files(tmp_path):
    """A Windows checkout with core.symlinks=false writes each symlink as a
    small text file holding its target; the package still finds models/ and
    sample_data/ at the repository root and napari still reads its manifest."""
    checkout = tmp_path / "checkout"
    for top in ("napari_hyperfusion", "models", "sample_data"):
        for src in (REPO / top).rglob("*"):
            if "__pycache__" in src.parts or src.is_dir() and not src.is_symlink():
                continue
            dest = checkout / src.relative_to(REPO)
            dest.parent.mkdir(parents=True, exist_ok=True)
            if src.is_symlink():
                dest.write_text(str(src.readlink()))  # what git writes without symlink support
            elif not any(p.is_symlink() for p in src.relative_to(REPO).parents if p != Path(".")):
                dest.write_bytes(src.read_bytes())
    assert (checkout / "napari_hyperfusion" / "models").is_file()  # the link became a text file
    code = (
        "import json\n"
        "from npe2 import PluginManifest\n"
        "from napari_hyperfusion import resources\n"
        "manifest = PluginManifest.from_file(resources.manifest_path())\n"
        "print(json.dumps({'manifest': manifest.name, 'models': str(resources.models_dir()),\n"
        "  'n_models': len(resources.shipped_models()),\n"
        "  'template': (resources.sample_data_dir() / 'template').is_dir()}))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=checkout, timeout=300,
        env={"PYTHONPATH": str(checkout), "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["manifest"] == "napari-hyperfusion"
    assert report["models"] == str(checkout / "models") and report["n_models"] >= 4 and report["template"]
