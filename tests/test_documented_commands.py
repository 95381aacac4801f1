"""Every command the README and docs/ show is run here, so that a documented
command cannot silently break.

Commands are the lines of the ```bash blocks in README.md and docs/*.md.
Each must match a rule below, or the test fails and asks for one. A rule
runs the command as written, at a small size where the real run is long
(fewer subjects, one epoch, two folds, one benchmark repeat), in a copy of
the repository's user-facing folders so that nothing in the checkout is
overwritten. Two kinds are checked rather than run: the test command
itself (CI runs it: .ci/run) and install lines (scripts/setup.sh runs them
before every test run).
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
BIN = Path(sys.executable).parent


def documented_commands() -> list[tuple[str, str]]:
    """(file name, command) for every command line in a ```bash block."""
    found = []
    for path in DOCS:
        in_block, pending = False, ""
        for line in path.read_text().splitlines():
            stripped = line.strip()
            if stripped.startswith("```"):
                in_block = stripped in ("```bash", "```sh", "```shell", "```console")
                continue
            if not in_block or not stripped or stripped.startswith("#"):
                continue
            stripped = stripped.removeprefix("$ ")
            if stripped.endswith("\\"):
                pending += stripped[:-1] + " "
                continue
            command = re.sub(r"\s+#.*$", "", pending + stripped).strip()
            pending = ""
            if command not in {c for _, c in found}:  # shown twice, run once
                found.append((path.relative_to(REPO).as_posix(), command))
    return found


# -- shrinking long runs ---------------------------------------------------------
def _set_option(argv: list[str], option: str, value: str) -> list[str]:
    """``option value`` replaced (or appended)."""
    out = list(argv)
    if option in out:
        out[out.index(option) + 1] = value
    else:
        out += [option, value]
    return out


WINDOW_BENCHES = ("bench_panel.py", "bench_whatif.py")
TRAIN_SMALL = ["--set", "epochs=1", "--set", "patience=1", "--set", "pretrain_tabular_epochs=0"]
BENCH_SMALL = {
    "bench_explain.py": {"--repeats": "1", "--models": "ad_hyperfusion", "--methods": "saliency"},
    "bench_panel.py": {"--repeats": "1", "--soak": "2"},
    "bench_hyper_layers.py": {"--repeats": "1", "--batches": "1"},
    "bench_medfusion.py": {"--repeats": "1", "--sizes": "shipped", "--batch": "2"},
    "bench_models.py": {"--repeats": "1", "--batch": "2", "--only": "hyperfusion"},
    "bench_predict_latency.py": {"--repeats": "1"},
    "bench_training.py": {"--subjects": "8", "--epochs": "2"},
    "bench_whatif.py": {"--moves": "3"},
    "bench_batch_predict.py": {"--sizes": "24", "--pool": "8", "--chunk-size": "8"},
    "bench_dicom.py": {"--repeats": "1", "--files": "20000"},
}


def command_of(argv: list[str], option: str) -> str:
    """The value given to ``option`` (empty when absent)."""
    return argv[argv.index(option) + 1] if option in argv[:-1] else ""


# brain-age files models.md trains with other settings, then reads with other commands
DOCS_TRAINED_BRAIN_AGE = (
    "runs/brain_age_plain", "runs/brain_age_aug", "runs/brain_age_varied", "runs/brain_age_template",
    "runs/brain_age_rotations",
)  # fmt: skip


def _small(argv: list[str], sandbox: Path) -> list[str]:
    """The same command at a size a test can afford; a command that reads a
    brain-age file models.md trains first gets it trained (one epoch) when
    it runs without the training command before it (``-k``)."""
    small = _shrink(argv, sandbox)
    if argv[1:2] == ["train"]:
        # a reader documented before its training command had the file trained small already: replace it
        outs = [a.removeprefix("out=") for a in argv if a.startswith("out=")]
        stand_in = [o for o in outs if o in DOCS_TRAINED_BRAIN_AGE and (sandbox / o / "model.safetensors").exists()]
        return small + ["--overwrite"] if stand_in else small
    text = " ".join(argv)
    missing = [p for p in DOCS_TRAINED_BRAIN_AGE if p in text and not (sandbox / p / "model.safetensors").exists()]
    if not missing:
        return small
    config = "models/configs/brain_age_hyperfusion.toml"
    trains = [
        shlex.join(["hyperfusion", "train", config, "--set", f"out={p}", "--set", "progress=false", *TRAIN_SMALL])
        for p in missing
    ]
    return ["bash", "-c", " && ".join([*trains, shlex.join(small)])]


def _shrink(argv: list[str], sandbox: Path) -> list[str]:
    """The same command at a size a test can afford."""
    tool = Path(argv[0]).name
    args = argv[1:]
    if tool == "torchrun":
        k = next(i for i, a in enumerate(args) if Path(a).name == "hyperfusion" or a.endswith("cli"))
        return [argv[0], *args[:k], *_shrink(args[k:], sandbox)]
    if tool.endswith("cli"):  # python -m napari_hyperfusion.cli is the hyperfusion command
        tool = "hyperfusion"
    if tool == "hyperfusion" and args[:1] == ["make-cohort"]:
        scratch = sandbox / "scratch_cohort"
        shutil.rmtree(scratch, ignore_errors=True)
        return _set_option(_set_option(argv, "--n", "16"), "--out", str(scratch))
    if tool == "hyperfusion" and args[:1] == ["train"]:
        return argv + TRAIN_SMALL
    if tool == "hyperfusion" and args[:1] == ["evaluate"]:
        # one seed: the first the command names (a later seed's report must merge with an earlier one's)
        first_seed = (command_of(argv, "--seeds") or "0").split(",")[0]
        return _set_option(_set_option(argv, "--folds", "2"), "--seeds", first_seed) + TRAIN_SMALL
    if tool == "hyperfusion" and args[:1] == ["bayes-limit"] and "--model" in args:
        # the limit on a model's own split needs the table it was trained on: train one on the
        # sandbox's small cohort with the same config, then ask for its limit
        configs = {
            "brain_age": "models/configs/brain_age_hyperfusion.toml",
            "ad_imaging": "models/configs/ad_imaging.toml",
        }
        config = next((c for key, c in configs.items() if key in " ".join(args)), None)
        assert config, f"add a training config for {shlex.join(argv)}"
        model = sandbox / "runs" / "limit_model"
        train = [argv[0], "train", config, "--set", f"out='{model}'", *TRAIN_SMALL, "--set", "progress=false"]
        limit = _set_option(argv, "--model", str(model / "model.safetensors"))
        return ["bash", "-c", f"{shlex.join(train)} && {shlex.join(limit)}"]
    if tool == "hyperfusion" and args[:1] == ["bayes-limit"]:  # records only: a few hundred draws
        return _set_option(_set_option(argv, "--n", "300"), "--sizes", "40")
    if tool in ("python", "python3") and args[:1] == ["scripts/check_prepare.py"]:
        return _set_option(argv, "--subjects", "SYN_DEMO_01")
    if tool in ("python", "python3") and args[:1] in (
        ["scripts/check_robustness.py"],
        ["scripts/calibrate_input_qc.py"],
    ):
        # two subjects per cohort; the held-out brain-age cohort the docs make is the sandbox's small one
        argv = _set_option(argv, "--n", "2")
        return _set_option(argv, "--age-cohort", "data/ba300/participants.tsv") if "--age-cohort" in argv else argv
    if tool in ("python", "python3") and args[:1] == ["scripts/make_truth_figure.py"]:
        return _set_option(argv, "--subjects", "SYN_DEMO_01")
    if tool == "hyperfusion" and args[:1] == ["whatif-fidelity"]:  # two subjects, four points a field
        return _set_option(_set_option(argv, "--n", "2"), "--points", "4")
    if tool in ("python", "python3") and args[:1] == ["scripts/learning_curve.py"]:
        # one size of the sandbox's small cohort, one epoch, the network and the logistic regression
        argv = _set_option(_set_option(argv, "--sizes", "40"), "--methods", "hyperfusion,logistic")
        return argv + TRAIN_SMALL
    if tool in ("python", "python3") and args[:1] == ["scripts/anatomy_shift.py"]:
        # the varied twin of the sandbox's small test cohort (the fixtures' task, size and seed), then the report
        brain_age = "participants" in command_of(argv, "--template")
        task, n, seed, table = (
            ("brain_age", "24", "5", "participants.tsv") if brain_age else ("ad", "16", "6", "cohort.csv")
        )
        varied = sandbox / "data" / f"{task}_varied"
        twin = (
            f"hyperfusion make-cohort --task {task} --n {n} --seed {seed} --anatomy varied --overwrite --quiet".split()
        )
        twin += ["--jobs", "1", "--out", str(varied)]
        report = _set_option(_set_option(argv, "--varied", str(varied / table)), "--bootstrap", "50")
        return ["bash", "-c", f"{shlex.join(twin)} && {shlex.join(report)}"]
    if tool == "hyperfusion" and args[:1] == ["explain-report"]:  # one subject, one method, few IG steps
        return _set_option(_set_option(_set_option(argv, "--n", "1"), "--ig-steps", "2"), "--methods", "saliency")
    if tool in ("python", "python3") and args[:1] == ["scripts/add_weight_map.py"]:
        # the sandbox's data/ad600 is a small cohort, not the model's: the model's own table, regenerated
        return _set_option(argv, "--cohort", str(sandbox / "regenerated" / "cohort.csv"))
    if tool in ("python", "python3") and args[:1] == ["tests/fuzz_cases.py"]:
        return [*argv[:3], str(sandbox / "fuzz" / argv[2]), *_set_option(argv[4:], "--limit", "3")]
    if tool in ("python", "python3") and args and args[0].startswith("benchmarks/"):
        for option, value in BENCH_SMALL.get(Path(args[0]).name, {}).items():
            argv = _set_option(argv, option, value)
        return argv
    if tool == "bash" and args[:1] == ["scripts/train_shipped_models.sh"]:
        return [argv[0], args[0], *TRAIN_SMALL, "--no-age-trend", *args[1:]]  # a 1-epoch model does not follow age
    if tool == "napari-hyperfusion" and "--help" not in args and "--screenshot" not in args:
        return argv + ["--screenshot", str(sandbox / "launcher.png")]
    return argv


# -- where and how a command runs -------------------------------------------------
@pytest.fixture(scope="module")
def sandbox(tmp_path_factory, ad_cohort_dir, brain_age_cohort_dir, ad_test_cohort_dir):
    """A copy of the user-facing folders, with small cohorts where the
    shipped configs expect theirs (data/ad600, data/ba300)."""
    root = tmp_path_factory.mktemp("repo")
    for name in ("models", "sample_data", "scripts", "benchmarks", "docs", "tests"):
        shutil.copytree(REPO / name, root / name, symlinks=False)
    (root / ".venv").symlink_to(REPO / ".venv")
    (root / "data").mkdir()
    (root / "data" / "ad600").symlink_to(ad_cohort_dir)
    (root / "data" / "ba300").symlink_to(brain_age_cohort_dir)
    (root / "data" / "ad_test1000").symlink_to(ad_test_cohort_dir)  # the comparison's fresh test subjects
    (root / "data" / "ad5000").symlink_to(ad_cohort_dir)  # the learning curve's training pool
    for name in ("ba_test200", "ba_cal300", "ba1500", "ba_cal300_varied", "ba_test200_varied"):  # brain-age cohorts
        (root / "data" / name).symlink_to(brain_age_cohort_dir)
    # the varied-anatomy training cohort: the small cohort stands in (the command's shape is what is tested)
    (root / "data" / "ba1500_varied").symlink_to(brain_age_cohort_dir)
    return root


@pytest.fixture(scope="module")
def ad_cohort_dir(tmp_path_factory):
    from napari_hyperfusion.synth.cohort import make_cohort

    return make_cohort("ad", 40, seed=5, out=tmp_path_factory.mktemp("ad600"), jobs=2).parent


@pytest.fixture(scope="module")
def ad_test_cohort_dir(tmp_path_factory):
    from napari_hyperfusion.synth.cohort import make_cohort

    return make_cohort("ad", 16, seed=6, out=tmp_path_factory.mktemp("ad_test1000"), jobs=2).parent


@pytest.fixture(scope="module")
def brain_age_cohort_dir(tmp_path_factory):
    from napari_hyperfusion.synth.cohort import make_cohort

    return make_cohort("brain_age", 24, seed=5, out=tmp_path_factory.mktemp("ba300"), jobs=2).parent


def _environment(display: bool = True) -> dict[str, str]:
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", "OMP_NUM_THREADS": "1"}
    if not display:
        env.pop("DISPLAY", None)
        env.pop("WAYLAND_DISPLAY", None)
    return env


def _run(argv: list[str], cwd: Path, env: dict[str, str], timeout: int = 600) -> subprocess.CompletedProcess:
    argv = [a.removeprefix(".venv/bin/") if a.startswith(".venv/bin/") else a for a in argv[:1]] + argv[1:]
    proc = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, (
        f"{shlex.join(argv)} exited {proc.returncode}:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    )
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    return proc


@dataclass
class Rule:
    pattern: str  # regex on the command
    kind: str  # "run" (in the sandbox), "repo" (in the checkout, no display), "ci", "setup"
    why: str = ""


RULES = [
    Rule(r"^bash scripts/test\.sh\b", "ci", "the test command: .ci/run runs it on every submission"),
    Rule(r"^source \.venv/bin/activate$", "env", "the environment setup.sh makes"),
    Rule(r"^(\.venv/bin/)?(python -m )?pip install\b", "setup", "install lines: scripts/setup.sh runs them"),
    Rule(r"^bash scripts/demo\.sh\b", "repo", "the demo, headless: it must set itself up and run under Xvfb"),
    Rule(r"^(\.venv/bin/)?ruff (check|format)\b", "repo", "style checks on the checkout"),
    Rule(r"^(\.venv/bin/)?(hyperfusion|napari-hyperfusion|torchrun)\b", "run"),
    Rule(r"^(\.venv/bin/)?python3? (benchmarks|scripts)/", "run"),
    Rule(r"^(\.venv/bin/)?python3? tests/fuzz_cases\.py\b", "run", "the fuzz corpora, a few generated cases each"),
    Rule(r"^bash scripts/train_shipped_models\.sh\b", "run"),
]
COMMANDS = documented_commands()
# still long at a small size (10-60 s each): run with -m slow (CI does)
SLOW = (
    r"\bevaluate\b",
    r"train_shipped_models",
    r"^torchrun",
    r"bench_(models|whatif|panel|explain|medfusion|batch_predict)",
    r"demo\.sh .*--(model|explain|view|size)",
    r"train models/configs/risk_",
    r"\bexplain-report\b",
    r"check_prepare\.py",
    r"check_robustness\.py",
    r"--prepare\b",  # registration, 20 s
    r"\bevaluate-merge\b",  # merges the reports the (slow) evaluate commands before it wrote
    r"learning_curve\.py",  # trains a network and predicts the test subjects
    r"anatomy_shift\.py",  # makes a varied cohort and predicts both with every model named
    r"brain_age_(plain|aug|varied|template|rotations)",  # trains brain-age models the next commands read (one session, in order)
)


def _params():
    for source, command in COMMANDS:
        slow = any(re.search(s, command) for s in SLOW)
        yield pytest.param(source, command, id=f"{source}:{command[:60]}", marks=[pytest.mark.slow] if slow else [])


def _rule(command: str) -> Rule | None:
    return next((r for r in RULES if re.search(r.pattern, command)), None)


def test_the_docs_show_commands_and_each_has_a_rule():
    assert len(COMMANDS) >= 10, "the README and docs/ show fewer commands than expected: is the parser broken?"
    unknown = [f"{f}: {c}" for f, c in COMMANDS if _rule(c) is None]
    assert not unknown, "documented commands no test runs (add a rule):\n" + "\n".join(unknown)


def test_the_readme_shows_the_two_commands():
    readme = [c for f, c in COMMANDS if f == "README.md"]
    assert "bash scripts/demo.sh" in readme and "bash scripts/test.sh" in readme
    assert not any("xvfb-run" in c for _, c in COMMANDS), "setup installs Xvfb; demo.sh uses it by itself"


@pytest.mark.parametrize(("source", "command"), list(_params()))
def test_documented_command_works(source, command, sandbox, tmp_path):
    rule = _rule(command)
    assert rule is not None, f"no rule for {command!r} ({source})"
    argv = shlex.split(command)
    if rule.kind == "ci":
        assert command.split()[:2] == ["bash", "scripts/test.sh"]
        assert "bash scripts/test.sh" in (REPO / ".ci" / "run").read_text()
        return
    if rule.kind == "env":
        assert (REPO / ".venv" / "bin" / "activate").is_file() and "-m venv .venv" in (
            REPO / "scripts" / "setup.sh"
        ).read_text()
        return
    if rule.kind == "setup":
        setup = (REPO / "scripts" / "setup.sh").read_text()
        for spec in (a for a in argv if not a.startswith("-") and a not in ("pip", "install", "python", "-m")):
            spec = spec.strip("'\"")
            base = re.sub(r"\[.*\]", "", spec)
            assert base in setup or spec in setup, f"{spec} is documented but scripts/setup.sh does not install it"
        return
    if rule.kind == "repo":
        if argv[:2] == ["bash", "scripts/demo.sh"]:
            shot = tmp_path / "demo.png"
            _run([*argv, "--screenshot", str(shot)], REPO, _environment(display=False), timeout=900)
            assert shot.stat().st_size > 50_000  # a real window, not an empty picture
        else:
            _run(argv, REPO, _environment())
        return
    small = _small(argv, sandbox)
    # the scripts that drive a window start their own 1920 x 1200 virtual screen without a display, as
    # the docs say; the test session's 800 x 600 one would leave the panel off screen (its pixels never change)
    own_screen = any(Path(a).name in WINDOW_BENCHES for a in argv)
    _run(small, sandbox, _environment(display=not own_screen), timeout=900)
