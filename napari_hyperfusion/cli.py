"""The ``hyperfusion`` command line.

Errors the user can fix (a bad file, a bad argument) print one message to
stderr and exit with status 2; they never print a traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from .errors import CLIError, HyperFusionError

__all__ = ["main"]


def _cmd_info(args: argparse.Namespace) -> None:
    from .io.model_file import read_info

    info = read_info(args.model)
    if args.json:
        print(json.dumps(info.to_dict(), indent=2, sort_keys=True))
        return
    c = info.config

    def say(text: str = "") -> None:  # every value here comes from the file: terminal-safe
        print(_plain(text))

    say(f"{info.name}")
    say(f"  task:        {info.task}")
    say(f"  outputs:     {', '.join(info.outputs)}{' (' + info.output_unit + ')' if info.output_unit else ''}")
    say(f"  network:     {c.backbone} / {c.fusion}, input {'x'.join(map(str, c.input_shape))}")
    if c.hyper_sites:
        say(f"  generated:   {', '.join(c.hyper_sites)} (embedding {c.embedding}, dim {c.emb_dim})")
    say(f"  EHR fields:  {', '.join(info.schema.names)} -> {info.schema.n_features} numbers")
    selection = info.risk_selection()
    if selection is not None:
        kept = selection.kept_by_label()
        say(f"  stage 1:     the network reads {', '.join(selection.fields(info.schema)) or 'no EHR field'}")
        for label, names in kept.items():
            say(f"               {label}: {', '.join(names) or '-'}")
    if c.uses_note:
        say(f"  note:        embedded by {info.note_encoder}")
    if info.thresholds:
        cuts = ", ".join(f"{n} {t:.2f}" for n, t in zip(info.outputs, info.thresholds))
        say(f"  thresholds:  {cuts}")
    stats = info.input_stats
    if stats:
        parts = [f"fitted on {stats.get('fitted_on', '?')}", f"EHR ranges of {len(stats.get('ehr', {}))} field(s)"]
        if "image" in stats:
            parts.append(f"{len(stats['image']['mean'])} image features")
        if "scan" in stats:
            parts.append(f"training voxels up to {stats['scan']['voxel_mm_max']:.1f} mm")
        say(f"  typical:     {'; '.join(parts)}")
    else:
        say("  typical:     no training statistics (no out-of-distribution flags; written before they existed)")
    bias = info.input_stats.get("age_bias")
    if bias:
        say(f"  age trend:   predicted = {bias['intercept']:.2f} + {bias['slope']:.3f} x age on "
              f"{_plain(bias.get('fitted_on', ''))}; the corrected gap is measured from it")  # fmt: skip
    checked = info.input_stats.get("whatif_fidelity")
    if checked:
        from .analysis.slider_trust import slider_trust

        verdicts = []
        for name in checked["fields"]:
            trust = slider_trust(info.input_stats, name)
            if trust is not None:
                verdicts.append(f"{_plain(name)} {'agrees' if trust.agrees else 'caution'}")
        say(f"  sliders:     {', '.join(verdicts)} (against the generator's truth on "
            f"{_plain(checked.get('checked_on', ''))})")  # fmt: skip
    if info.flags_text:
        say(f"  flags:       {info.flags_text}")
    for key, value in info.metrics.items():
        say(f"  metric {key}: {value}")


def _limit_on_model_split(args: argparse.Namespace) -> None:
    """The limit on the test rows a shipped model was scored on, beside its score."""
    from .data.dataset import TASK_SPECS, read_cohort
    from .io.model_file import read_info
    from .synth.limit_report import limit_on_split
    from .train.loop import base_schema

    if not args.cohort:
        raise CLIError("--model needs --cohort: the synthetic table the model was trained on")
    info = read_info(args.model)
    task = {"ad_classification": "ad", "brain_age": "brain_age"}.get(info.task)
    if task is None:
        raise CLIError(f"{Path(args.model).name} is a {info.task} model; the Bayes limit exists for ad and brain_age")
    import hashlib

    if not Path(args.cohort).is_file():
        raise CLIError(f"{args.cohort}: no such cohort table")
    expected = info.provenance.get("cohort_sha256")
    if expected and hashlib.sha256(Path(args.cohort).read_bytes()).hexdigest() != expected:
        raise CLIError(
            f"{args.cohort} is not the table {Path(args.model).name} was trained on (its SHA-256 differs from the "
            f"model's provenance): the split would not be the model's test split"
        )
    cohort = read_cohort(args.cohort, TASK_SPECS[task], base_schema(task), need_target=True, need_images=False)
    result = limit_on_split(info, cohort.table, cohort.y, TASK_SPECS[task].is_classification)
    if result is None:
        raise CLIError(f"{Path(args.cohort).name} has no ground truth or {Path(args.model).name} has no test split")
    main = "balanced_accuracy" if task == "ad" else "mae"
    print(f"{info.name} on its {result['n_test']} held-out test subjects (SYNTHETIC):")
    for name, scores in result["limit"].items():
        print(f"  {name}: {main} {scores[main]:.3f}")
    model_score = result["model"].get(main)
    print(f"  the model: {main} {model_score:.3f}" if model_score is not None else "  the model: no test score stored")


def _cmd_bayes_limit(args: argparse.Namespace) -> None:
    from .io.atomic import write_text_atomically
    from .synth.limit_report import limit_table, to_markdown

    try:
        sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    except ValueError:
        raise CLIError(f"--sizes must be whole numbers separated by commas, got {args.sizes!r}") from None
    if args.n < 100 or not sizes or min(sizes) < 20:
        raise CLIError("--n must be at least 100 and every --sizes entry at least 20")
    if args.model:
        _limit_on_model_split(args)
        return
    start = time.perf_counter()
    rows = limit_table(args.task, n_test=args.n, seed=args.seed, sizes=sizes)
    metrics = ["mae", "r2"] if args.task == "brain_age" else ["balanced_accuracy", "auc_macro_ovr", "f1_macro"]
    table = to_markdown(rows, metrics)
    command = (
        " ".join(["hyperfusion", *sys.argv[1:]]) if sys.argv[1:2] == ["bayes-limit"] else "hyperfusion bayes-limit"
    )
    text = (
        f"SYNTHETIC {args.task} task, {args.n} fresh test subjects (seed {args.seed}):\n\n{table}\n"
        f"Produced by `{command}` in {time.perf_counter() - start:.0f} s.\n"
    )
    print(text)
    if args.out:
        write_text_atomically(args.out, text)
        print(f"wrote {args.out}")


def _cmd_make_cohort(args: argparse.Namespace) -> None:
    from .synth.cohort import make_cohort

    out = Path(args.out)
    if out.exists() and any(out.iterdir()) and not args.overwrite:
        raise CLIError(f"{out} exists and is not empty; choose another folder or pass --overwrite")
    if args.n < 1:
        raise CLIError(f"--n must be at least 1, got {args.n}")
    anatomy = None
    if args.anatomy_mm is not None and args.anatomy != "varied":
        raise CLIError("--anatomy-mm sets how much a varied shape varies: give it with --anatomy varied")
    if args.anatomy == "varied":
        from .synth.anatomy import AnatomyVariation

        amplitude = AnatomyVariation().amplitude_mm if args.anatomy_mm is None else args.anatomy_mm
        if not 0 < amplitude <= 6:
            raise CLIError(f"--anatomy-mm must be in (0, 6] mm, got {amplitude:g}")
        anatomy = AnatomyVariation(amplitude_mm=amplitude)
    try:
        from tqdm import tqdm
    except ImportError:  # progress bar is a nicety
        tqdm = None
    bar = tqdm(total=args.n, unit="scan", desc=f"{args.task} cohort", disable=args.quiet) if tqdm else None
    start = time.perf_counter()
    path = make_cohort(
        args.task,
        args.n,
        args.seed,
        out,
        jobs=args.jobs,
        progress=(lambda done, total: bar.update(1)) if bar is not None else None,
        anatomy=anatomy,
    )
    if bar is not None:
        bar.close()
    print(f"wrote {args.n} SYNTHETIC subjects to {path} in {time.perf_counter() - start:.1f} s")


def _cmd_make_dicom(args: argparse.Namespace) -> None:
    from .data.scan_file import open_nifti, read_canonical
    from .resources import sample_data_dir
    from .synth.dicom_series import write_series

    out = Path(args.out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        # a series is every DICOM file of its folder: writing among other files would mix them
        raise CLIError(f"{out} exists and is not an empty folder; choose a new folder")
    data, affine = read_canonical(open_nifti(sample_data_dir() / f"{args.subject}.nii.gz"), keep_integers=True)
    description = f"T1 {args.acquisition.upper()} SYNTHETIC {args.subject}"
    files = write_series(data, affine, out, args.acquisition, description=description, enhanced=args.enhanced)
    print(
        f"wrote SYNTHETIC subject {args.subject} as {'an' if args.acquisition == 'axial' else 'a'} {args.acquisition} DICOM series "
        f"({len(files)} file(s){', enhanced multi-frame' if args.enhanced else ''}) to {out}; its headers carry "
        "made-up patient identifiers, none of which the tool shows or writes"
    )


def _cmd_list_series(args: argparse.Namespace) -> None:
    from .data.dicom import check_readable, find_series, stack_geometry
    from .errors import ImageError

    found = find_series(args.source)
    print(f"{len(found)} DICOM series in {_plain(Path(args.source).name or args.source)}:")
    for series in found:
        try:
            check_readable(series)
            stack_geometry(series.frames, "it")
            verdict = "readable"
        except ImageError as err:
            verdict = f"refused: {err}"
        print(f"  {_plain(series.describe())}  [{_plain(verdict)}]")


def _train_config(args: argparse.Namespace, extra: dict | None = None):
    from .train.loop import TrainConfig, apply_overrides, load_config_file

    data = load_config_file(args.config)
    data = apply_overrides(data, args.set or [])
    data.update(extra or {})
    return TrainConfig.from_dict(data)


def _cmd_train(args: argparse.Namespace) -> None:
    from .train.loop import dist_info
    from .train.run import train_and_save

    cfg = _train_config(args, {"resume": True} if args.resume else None)
    outcome = train_and_save(cfg, command=" ".join(["hyperfusion", *sys.argv[1:]]), overwrite=args.overwrite)
    if dist_info()[0] != 0:
        return
    fit = outcome.fit
    from .train.loop import selection_metric

    main = selection_metric(cfg.spec)
    print(
        f"trained {cfg.fusion} on {outcome.n_train} subjects in {fit.seconds:.0f} s: best epoch {fit.best_epoch}, "
        f"validation {main} {fit.best_metric:.3f}"
        + (f", test {main} {outcome.test_metrics[main]:.3f}" if outcome.test_metrics else "")
        + (" (stopped early)" if fit.stopped_early else "")
    )
    print(f"wrote {outcome.model_path}")
    if cfg.fusion == "hyperfusion":
        print(
            "hyper layers: trained with their forms fixed by rule (bmm for 1x1x1 kernels, grouped otherwise), never "
            "by timing, so that the same seed, data and config give the same model"
        )
    _print_auto_forms()


def _print_auto_forms() -> None:
    """Which computation form ``auto`` measured fastest for each generated
    convolution on this device (at prediction, chosen at first use; training
    never measures)."""
    from .nn.hyper import auto_form_choices

    for choice in auto_form_choices():
        cin, cout, kernel = choice.signature[1:4]
        times = ", ".join(f"{form} {ms:.2f} ms" for form, ms in choice.times_ms.items())
        print(
            f"hyper conv {cin}->{cout} k{kernel} batch bucket {choice.signature[-1]} on {choice.device}: "
            f"{choice.form} (measured: {times})"
        )


def _bayes_limits(cfg, test_cohort: str | None) -> dict:
    """The generator's Bayes limits when the test rows come from our
    synthetic generator (their table has the ground-truth columns)."""
    import pandas as pd

    from .synth.truth import limits_for

    path = Path(test_cohort or cfg.cohort)
    try:
        columns = pd.read_csv(path, sep="\t" if path.suffix.lower() in (".tsv", ".tab") else ",", nrows=0).columns
    except (OSError, ValueError):
        return {}  # read_cohort reports an unreadable table with its own message
    return limits_for(cfg.task, columns)


def _append_row(path: Path, row: dict) -> None:
    """One finished fold model's scores, appended as it is trained (a run
    that is stopped keeps what it finished)."""
    import pandas as pd

    from .io.csv_text import to_csv_text

    path.parent.mkdir(parents=True, exist_ok=True)
    text = to_csv_text(pd.DataFrame([row]), header=not path.exists())
    with path.open("a", newline="") as sink:
        sink.write(text)


def _cmd_evaluate(args: argparse.Namespace) -> None:
    from .train.evaluate import cross_validate, to_markdown

    try:
        cfg = _train_config(args)
        fusions = [f.strip() for f in args.fusions.split(",") if f.strip()]
        seeds = [int(s) for s in args.seeds.split(",")]
    except ValueError as err:
        raise CLIError(str(err)) from None
    if args.folds < 2:
        raise CLIError(f"--folds must be at least 2, got {args.folds}")
    if args.max_folds is not None and not 1 <= args.max_folds <= args.folds:
        raise CLIError(f"--max-folds must be between 1 and --folds ({args.folds}), got {args.max_folds}")
    out = Path(args.out)
    finished = out / "fold_models.csv"
    first_model = [True]

    def on_model(row: dict) -> None:
        if first_model[0]:  # this run's models only; an earlier run's stay until this one has one
            finished.unlink(missing_ok=True)
            first_model[0] = False
        _append_row(finished, row)

    start = time.perf_counter()
    result = cross_validate(
        cfg,
        fusions,
        folds=args.folds,
        seeds=seeds,
        test_fraction=args.test_fraction,
        log=lambda m: print(m, flush=True),
        test_cohort=args.test_cohort,
        limits=None if args.no_limit else _bayes_limits(cfg, args.test_cohort),
        on_model=on_model,
        max_folds=args.max_folds,
    )
    title = f"{cfg.task} on {Path(cfg.cohort).name}" + (" (SYNTHETIC data)" if result.synthetic else "")
    report = to_markdown(result, title=title)
    command = " ".join(["hyperfusion", *sys.argv[1:]])
    report += f"\nProduced by `{command}` in {time.perf_counter() - start:.0f} s.\n"
    splits = {
        "split_seed": cfg.seed, "seeds": seeds, "folds": args.folds, "max_folds": args.max_folds,
        "test_fraction": None if args.test_cohort else args.test_fraction,
        "cohort_sha256": _sha256_of(cfg.cohort), "test_sha256": _sha256_of(args.test_cohort),
    }  # fmt: skip
    _write_report(out, result, title, report, splits)


def _sha256_of(path: str | None) -> str | None:
    import hashlib

    return hashlib.sha256(Path(path).read_bytes()).hexdigest() if path else None


def _write_report(out: Path, result, title: str, report: str, splits: dict | None = None) -> None:
    import json

    import pandas as pd

    from .io.atomic import write_text_atomically
    from .io.csv_text import to_csv_text
    from .train.evaluate import ENSEMBLES, result_meta, summarise

    summary = pd.concat([summarise(result, kind).assign(ensemble=kind) for kind in ENSEMBLES])
    write_text_atomically(out / "evaluation.md", report)
    write_text_atomically(out / "evaluation.csv", to_csv_text(result.rows))
    write_text_atomically(out / "summary.csv", to_csv_text(summary))
    write_text_atomically(out / "evaluation.json", json.dumps(result_meta(result, title, splits), indent=1))
    kept = ""
    if result.predictions is not None:
        write_text_atomically(out / "test_predictions.csv", to_csv_text(result.predictions))
        kept = ", test_predictions.csv (the fold ensembles' test predictions)"
    else:  # an earlier report's predictions in this folder are not this one's
        (out / "test_predictions.csv").unlink(missing_ok=True)
    print(report)
    print(f"wrote {out / 'evaluation.md'}, {out / 'evaluation.csv'}, {out / 'summary.csv'}{kept} and evaluation.json")


def _cmd_evaluate_merge(args: argparse.Namespace) -> None:
    from .train.evaluate import merge_results, replace_limits, result_from_report, to_markdown

    loaded = []
    for folder in args.reports:
        try:
            loaded.append(result_from_report(Path(folder)))
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise CLIError(f"{folder}: not a report folder of hyperfusion evaluate ({err})") from None
    try:
        merged = merge_results([r for r, _, _ in loaded], [s for _, _, s in loaded])
    except ValueError as err:
        raise CLIError(str(err)) from None
    if args.test_cohort:
        merged = replace_limits(merged, _limit_scores(args.test_cohort, merged))
    title = loaded[0][1]
    report = to_markdown(merged, title=title)
    command = " ".join(["hyperfusion", *sys.argv[1:]]) if sys.argv[1:2] == ["evaluate-merge"] else ""
    report += f"\nMerged from {', '.join(args.reports)}" + (f" by `{command}`" if command else "") + ".\n"
    known = next((s for _, _, s in loaded if s), {})  # an older report records no splits
    splits = {**known, "seeds": sorted({int(s) for s in merged.rows.seed})} if known else {}
    _write_report(Path(args.out), merged, title, report, splits)


def _limit_scores(test_cohort: str, result) -> dict:
    """The Bayes limits computed again on ``test_cohort`` (the merged
    reports' test set: the same number of subjects)."""
    from .data.dataset import TASK_SPECS, read_cohort
    from .synth.truth import limits_for
    from .train.loop import base_schema, task_scores

    task = "ad" if "balanced_accuracy" in result.metrics else "brain_age"
    spec = TASK_SPECS[task]
    cohort = read_cohort(test_cohort, spec, base_schema(task), need_target=True, need_images=False)
    if len(cohort.y) != result.n_test:
        raise CLIError(f"{test_cohort} has {len(cohort.y)} subjects; the reports were tested on {result.n_test}")
    limits = limits_for(task, cohort.table.columns)
    if not limits:
        raise CLIError(f"{test_cohort} has no ground-truth columns: no limit can be computed for it")
    return {
        name: task_scores(spec, cohort.y, limit(cohort.table.reset_index(drop=True))) for name, limit in limits.items()
    }


def _cmd_prepare(args: argparse.Namespace) -> None:
    from .data.preprocess import load_scan
    from .data.registration import prepare_scan, qc_verdict, write_prepared

    failed = 0
    for source in args.scans:
        path = Path(source)
        bar = None
        if not args.quiet:
            from tqdm import tqdm

            bar = tqdm(total=100, desc=f"prepare {path.name}", unit="%")

        shown: dict[str, object] = {}

        def progress(fraction: float, stage: str, bar=bar, name=path.name, shown=shown) -> None:
            # called every optimiser iteration: redraw only when what it shows changes
            now = (round(100 * fraction), stage)
            if now != shown.get("last"):
                shown["last"] = now
                bar.set_description(f"prepare {name}: {stage}", refresh=False)
                bar.n = now[0]
                bar.refresh()

        try:
            prepared = prepare_scan(
                load_scan(path, series=args.series),
                deformable=args.deformable,
                progress=progress if bar is not None else None,
            )
        finally:
            if bar is not None:
                bar.close()
        verdict, reason = qc_verdict(prepared.qc)
        failed += verdict == "refuse"
        # a refused result is kept for inspection, but never under a name a pipeline would take as prepared
        stem = _scan_stem(path, args.series) + ("_REFUSED" if verdict == "refuse" else "")
        paths = write_prepared(prepared, args.out, stem)
        print(
            f"{path.name}: {verdict.upper()} ({reason}); head scale {prepared.head_scale:.3f}; "
            f"wrote {paths['scan']}, {paths['transform'].name}, {paths['qc'].name}"
        )
    if failed:
        raise CLIError(f"{failed} of {len(args.scans)} scan(s) failed the registration check; see the lines above")


def _scan_stem(path: Path, series: str | None = None) -> str:
    """Output names for a scan: a NIfTI file's name without its suffix, a
    DICOM folder's name (or the folder of a DICOM file or DICOMDIR), with
    the chosen series' key where ``--series`` chose one of several."""
    from .data.dicom import scrub_uids, series_key
    from .data.scan_file import is_nifti_path, nifti_stem

    if is_nifti_path(path):
        return nifti_stem(path)
    folder = path if path.is_dir() else path.resolve().parent
    stem = scrub_uids(folder.name) or "dicom"  # archives name series folders by their UID
    if series:  # a key as the list gives it, or a full UID (never written out: its hash is)
        series = series.strip()
        stem += "_" + (series.lower() if len(series) == 6 else series_key(series))
    return stem


def _cmd_predict(args: argparse.Namespace) -> None:
    from .infer.batch import parts_folder, predict_to_csv
    from .io.model_file import load_model
    from .nn.devices import dist_info, init_distributed, resolve_device, torch_threads

    out = Path(args.out)
    if out.exists() and not args.overwrite:
        raise CLIError(f"{out} exists; choose another file or pass --overwrite")
    if args.resume and args.overwrite:
        raise CLIError("--resume continues a run and --overwrite discards it: choose one")
    if args.resume and not parts_folder(out).exists():
        raise CLIError(f"nothing to resume: {parts_folder(out)} does not exist (run without --resume)")
    device = init_distributed(resolve_device(args.device))  # under torchrun: one chunk in every world-th
    rank, world = dist_info()
    model = load_model(args.model, device=device)
    bar = None
    if not args.quiet and rank == 0:
        from tqdm import tqdm

        bar = tqdm(desc="predict" if world == 1 else f"predict (rank 0 of {world})", unit="subject")

    def progress(stage: str, done: int, total: int) -> None:
        bar.total = total
        bar.n = done
        bar.refresh()

    try:
        summary = predict_to_csv(
            model, args.cohort, out, batch_size=args.batch_size, chunk_size=args.chunk_size,
            jobs=args.jobs or torch_threads(), prepare=args.prepare, resume=args.resume, overwrite=args.overwrite,
            progress=progress if bar is not None else None,
        )  # fmt: skip
    finally:
        if bar is not None:
            bar.close()
    if rank != 0:
        return
    resumed = summary.chunks_resumed
    print(
        f"wrote {summary.n_rows - summary.n_refused} predictions of {model.info.name} to {out}"
        + (" (model trained on SYNTHETIC data)" if model.info.synthetic_data else "")
        + (f"; {resumed} of {summary.chunks_total} chunk(s) were kept from the interrupted run" if resumed else "")
        + (f"; {world} processes" if world > 1 else "")
    )
    if summary.n_warned or (summary.n_flagged and model.info.input_stats):
        print(f"{summary.n_warned} scan(s) with input-QC warnings and {summary.n_flagged} row(s) with "
              "out-of-distribution flags: see the input_qc, qc_reasons and ood_flags columns")  # fmt: skip
    if summary.n_refused:
        listed = ", ".join(summary.refused_ids) + (" ..." if summary.n_refused > len(summary.refused_ids) else "")
        raise CLIError(
            f"{summary.n_refused} of {summary.n_rows} scan(s) refused by the input check and not predicted "
            f"({listed}): {summary.first_reason}. "
            + (
                "They were prepared (--prepare) and still fail: check that they are skull-stripped T1 scans."
                if args.prepare
                else "Prepare them first: rerun with --prepare, or `hyperfusion prepare`."
            )
        )


def _cmd_explain_report(args: argparse.Namespace) -> None:
    from .analysis.explain import IMAGE_METHODS
    from .analysis.trust import load_subjects, trust_report
    from .io.atomic import write_text_atomically
    from .io.model_file import load_model

    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = [m for m in methods if m not in IMAGE_METHODS]
    if unknown or not methods:
        raise CLIError(f"unknown method {(unknown or [''])[0]!r}; choose from {', '.join(IMAGE_METHODS)}")
    if args.n < 1:
        raise CLIError(f"--n must be at least 1, got {args.n}")
    if args.ig_steps < 2:
        raise CLIError(f"--ig-steps must be at least 2, got {args.ig_steps}")
    model = load_model(args.model, device=args.device)
    ids = [i.strip() for i in args.subjects.split(",") if i.strip()] if args.subjects else None
    subjects = load_subjects(model, args.table, n=args.n, ids=ids)
    progress, close = _progress_bar("explain-report", "map", args.quiet)
    try:
        report = trust_report(
            model, subjects, methods, seed=args.seed, n_steps=args.ig_steps, completeness_steps=2 * args.ig_steps,
            baseline=args.baseline, output="logit" if args.logit else "probability", progress=progress,
        )  # fmt: skip
    finally:
        close()
    command = " ".join(["hyperfusion", *sys.argv[1:]]) if sys.argv[1:2] == ["explain-report"] else None
    text = report.to_markdown(command)
    write_text_atomically(args.out, text)
    print(text)
    print(f"wrote {args.out}")


def _cmd_whatif_fidelity(args: argparse.Namespace) -> None:
    from .io.atomic import write_text_atomically
    from .io.csv_text import to_csv_text
    from .io.model_file import load_model
    from .synth.coverage import REGION_OF_VOLUME, seen_volumes
    from .synth.fidelity import fidelity_summary, support_markdown, support_summary, to_markdown, whatif_curves

    model = load_model(args.model, device=args.device)
    fields = [f.strip() for f in args.fields.split(",") if f.strip()] if args.fields else None
    progress, close = _progress_bar("whatif-fidelity", "subject", args.quiet)
    start = time.perf_counter()
    try:
        pairs = whatif_curves(model, args.cohort, n=args.n, fields=fields, points=args.points, progress=progress)
    finally:
        close()
    regression = model.info.kind == "regression"
    seen = seen_volumes(model.info.image if model.info.config.uses_image else None)
    command = " ".join(["hyperfusion", *sys.argv[1:]]) if sys.argv[1:2] == ["whatif-fidelity"] else None
    subjects = len({p.subject for p in pairs})
    held = ", ".join(REGION_OF_VOLUME[c] for c in seen) or "none: the model reads no image"
    text = (
        f"What-if fidelity of {_plain(model.info.name)} (sha256 {model.sha256[:12]}) on {subjects} SYNTHETIC "
        f"subjects of {_plain(Path(args.cohort).name)}: each field's response curve against the generator's "
        "exact answer (the same record, unknown fields unknown).\n\n"
        f"Against the truth the model can reach (the true volumes its views hold: {held}):\n\n"
        + to_markdown(fidelity_summary(pairs, against="view"), regression)
    )
    if len(seen) < len(REGION_OF_VOLUME):
        text += "\nAgainst the truth that knows every true volume:\n\n" + to_markdown(
            fidelity_summary(pairs, against="all"), regression
        )
    support = support_summary(pairs, against="view")
    if support.outside.max() > 0:
        text += (
            "\nWhere the sliders leave the training data (a value beyond 3 SDs of what the record's other fields "
            "lead the training rows to expect: the panel's grey band), against the truth the model can reach:\n\n"
            + support_markdown(support, regression)
        )
    if command:
        text += f"\nProduced by `{command}` in {time.perf_counter() - start:.0f} s.\n"
    print(text)
    if args.out:
        write_text_atomically(args.out, text)
        print(f"wrote {args.out}")
    if args.curves:
        import pandas as pd

        rows = [
            {"subject": p.subject, "field": p.field, "value": v, "known": p.known,
             "outside_the_data": bool(p.outside[j]) if p.outside is not None else False, **{
                f"{kind}_{name}": float(arr[j, k])
                for kind, arr in (("model", p.model), ("truth", p.truth), ("truth_all_volumes", p.against("all")))
                for k, name in enumerate(model.info.outputs)}}
            for p in pairs for j, v in enumerate(p.values)
        ]  # fmt: skip
        write_text_atomically(args.curves, to_csv_text(pd.DataFrame(rows)))
        print(f"wrote {args.curves}")
    if args.write:
        import hashlib

        from .analysis.slider_trust import fidelity_record
        from .io.model_file import update_info

        cohort = Path(args.cohort)
        digest = hashlib.sha256(cohort.read_bytes()).hexdigest()[:12]
        checked_on = f"{subjects} subjects of {cohort.parent.name}/{cohort.name} (sha256 {digest})"
        record = fidelity_record(fidelity_summary(pairs, against="view"), subjects, _plain(checked_on), regression)
        update_info(args.model, input_stats={**model.info.input_stats, "whatif_fidelity": record})
        print(f"wrote the sliders' check ({', '.join(record['fields'])}) into {_plain(args.model)}")


def _progress_bar(desc: str, unit: str, quiet: bool):
    """A ``progress(done, total)`` callback drawing a tqdm bar (None when
    ``quiet``) and the function that closes it."""
    if quiet:
        return None, lambda: None
    from tqdm import tqdm

    bar = tqdm(desc=desc, unit=unit)

    def progress(done: int, total: int) -> None:
        bar.total = total
        bar.n = done
        bar.refresh()

    return progress, bar.close


def _plain(text: str) -> str:
    """Text from a file, printable on a terminal: control characters dropped."""
    return "".join(c for c in str(text) if c.isprintable())


def _at_least(low: int, high: int | None = None, why: str = ""):
    """An argparse type: a whole number >= ``low`` (and <= ``high``, for
    the reason ``why``); argparse prints the message and exits 2, like every
    other usage error."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be at least {low}, got {value}")
        if high is not None and value > high:
            raise argparse.ArgumentTypeError(f"must be at most {high}, got {value}{': ' + why if why else ''}")
        return value

    parse.__name__ = f"whole number >= {low}" + (f" and <= {high}" if high is not None else "")
    return parse


MAX_CHUNK = 2048  # subjects: one chunk's scans, resampled views and rows stay within a few hundred MB


def _fraction(text: str) -> float:
    """An argparse type: a number strictly between 0 and 1."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0.0 < value < 1.0:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1 (exclusive), got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = argparse.ArgumentParser(
        prog="hyperfusion",
        description="HyperFusion image + EHR models: inspect model files, generate synthetic cohorts "
        "(research and teaching use only).",
    )
    parser.add_argument("--version", action="version", version=f"napari-hyperfusion {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    info = sub.add_parser("info", help="show a model file's metadata without loading its weights")
    info.add_argument("model", help="a .safetensors model file")
    info.add_argument("--json", action="store_true", help="print the full metadata as JSON")
    info.set_defaults(func=_cmd_info)
    make_dicom = sub.add_parser(
        "make-dicom", help="write a shipped synthetic subject as a DICOM series (to try the DICOM reader)"
    )
    make_dicom.add_argument("subject", choices=[f"SYN_DEMO_0{i}" for i in range(1, 6)], help="a sample subject")
    make_dicom.add_argument("--out", required=True, help="the series' folder (new or empty)")
    make_dicom.add_argument("--acquisition", choices=("axial", "sagittal", "coronal"), default="axial")
    make_dicom.add_argument("--enhanced", action="store_true", help="one enhanced multi-frame file")
    make_dicom.set_defaults(func=_cmd_make_dicom)

    series = sub.add_parser("list-series", help="list the DICOM series of a folder, file or DICOMDIR")
    series.add_argument("source", help="a folder, a DICOM file or a DICOMDIR")
    series.set_defaults(func=_cmd_list_series)

    cohort = sub.add_parser("make-cohort", help="generate a synthetic cohort (scans + ADNIMERGE-style table)")
    cohort.add_argument(
        "--task",
        choices=("ad", "brain_age"),
        default="ad",
        help="'ad' also writes the multilabel risk labels and notes (task 'risk' reads them)",
    )
    cohort.add_argument("--n", type=_at_least(1), default=800, help="number of subjects (default 800)")
    cohort.add_argument("--seed", type=_at_least(0), default=0)
    cohort.add_argument("--out", required=True, help="output folder")
    cohort.add_argument("--jobs", type=_at_least(1), default=os.cpu_count() or 1, help="worker processes")
    cohort.add_argument("--overwrite", action="store_true", help="write into a non-empty folder")
    cohort.add_argument("--quiet", action="store_true", help="no progress bar")
    cohort.add_argument(
        "--anatomy",
        choices=("template", "varied"),
        default="template",
        help="'varied': every brain also gets its own smooth shape (volume-keeping); the records, poses and "
        "nuisance stay those of the same seed with 'template' (default)",
    )
    cohort.add_argument(
        "--anatomy-mm", type=float, default=None, help="RMS displacement of the varied shape, mm (default 2.5)"
    )
    cohort.set_defaults(func=_cmd_make_cohort)
    limit = sub.add_parser(
        "bayes-limit",
        help="the Bayes limit of the synthetic task on fresh draws, beside logistic regressions (a learning curve)",
    )
    limit.add_argument("--task", choices=("ad", "brain_age"), default="ad")
    limit.add_argument("--n", type=_at_least(100), default=20_000, help="test subjects drawn (default 20000)")
    limit.add_argument("--seed", type=_at_least(0), default=0)
    limit.add_argument(
        "--sizes", default="100,200,400,800,1600,3200", help="training-set sizes of the logistic regressions"
    )
    limit.add_argument("--out", help="also write the table to this Markdown file")
    limit.add_argument("--model", help="instead: the limit on this model file's held-out test split ...")
    limit.add_argument("--cohort", help="... of this synthetic cohort table (the one the model was trained on)")
    limit.set_defaults(func=_cmd_bayes_limit)

    overrides_help = "override a config value, e.g. --set epochs=5 --set fusion=film (repeatable)"
    train = sub.add_parser("train", help="train a model from a TOML or YAML config; run under torchrun for DDP")
    train.add_argument("config", help="a .toml or .yaml file of settings (see docs/training.md)")
    train.add_argument("--set", action="append", metavar="KEY=VALUE", help=overrides_help)
    train.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.pt")
    train.add_argument("--overwrite", action="store_true", help="replace an earlier run's files in OUT")
    train.set_defaults(func=_cmd_train)

    evaluate = sub.add_parser("evaluate", help="k-fold cross-validation of HyperFusion against baselines")
    evaluate.add_argument("config", help="the training config (task, cohort, settings)")
    evaluate.add_argument("--set", action="append", metavar="KEY=VALUE", help=overrides_help)
    evaluate.add_argument(
        "--fusions",
        default="hyperfusion,imaging,tabular,concat,film,daft",
        help="comma-separated methods to compare (default: all); a method may carry its own "
        "settings after colons, e.g. medfusion:use_note=false",
    )
    evaluate.add_argument("--folds", type=_at_least(2), default=4)
    evaluate.add_argument("--seeds", default="0,1", help="comma-separated split seeds (default 0,1)")
    evaluate.add_argument("--test-fraction", type=_fraction, default=0.2, help="held-out test share (default 0.2)")
    evaluate.add_argument(
        "--test-cohort",
        help="a separate cohort table to test on (then the whole config cohort is cross-validated)",
    )
    evaluate.add_argument(
        "--max-folds",
        type=_at_least(1),
        help="train only the first N folds of each seed (a quicker ablation on the same splits)",
    )
    evaluate.add_argument(
        "--no-limit", action="store_true", help="leave out the Bayes-limit rows of a synthetic cohort"
    )
    evaluate.add_argument("--out", required=True, help="folder for evaluation.md / .csv")
    evaluate.set_defaults(func=_cmd_evaluate)
    merge = sub.add_parser(
        "evaluate-merge",
        help="one report from evaluate runs on the same folds and test set: other methods on the same split seeds, "
        "or other split seeds",
    )
    merge.add_argument("reports", nargs="+", help="report folders written by hyperfusion evaluate")
    merge.add_argument("--out", required=True, help="folder for the merged evaluation.md / .csv")
    merge.add_argument("--test-cohort", help="compute the Bayes-limit rows again on this (the reports' test) table")
    merge.set_defaults(func=_cmd_evaluate_merge)

    prep = sub.add_parser(
        "prepare",
        help="register T1 scans to the MNI template for the models (needs the extra [prep]: SimpleITK)",
    )
    prep.add_argument(
        "scans",
        nargs="+",
        help="T1 scans in any orientation and voxel size: NIfTI files or DICOM series (folder, file, DICOMDIR)",
    )
    prep.add_argument(
        "--series",
        default=None,
        help="the DICOM series to read where a folder holds several (its key, as the refusal lists them)",
    )
    prep.add_argument("--out", required=True, help="folder for <name>_mni.nii.gz, <name>_to_mni.tfm, <name>_prep.json")
    prep.add_argument("--deformable", action="store_true", help="add a B-spline refinement after the affine stage")
    prep.add_argument("--quiet", action="store_true", help="no progress bar")
    prep.set_defaults(func=_cmd_prepare)

    predict = sub.add_parser("predict", help="predict a cohort table with a model file")
    predict.add_argument("model", help="a .safetensors model file")
    predict.add_argument(
        "cohort",
        help="a cohort CSV/TSV (same columns as for training; no target needed); images are NIfTI or DICOM folders",
    )
    predict.add_argument("--out", required=True, help="the predictions CSV to write")
    predict.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    predict.add_argument("--batch-size", type=_at_least(1), default=16, help="subjects per forward pass")
    predict.add_argument("--chunk-size", type=_at_least(1, MAX_CHUNK, "a chunk's scans are held in memory at once"),
                         default=256,
                         help="subjects per chunk: the memory bound and the unit of --resume (default 256)")  # fmt: skip
    predict.add_argument(
        "--jobs", type=_at_least(1), default=None,
        help="threads loading and checking scans (default: the CPU threads torch uses, i.e. the cores or OMP_NUM_THREADS)",
    )  # fmt: skip
    predict.add_argument("--resume", action="store_true", help="continue an interrupted run from its finished chunks")
    predict.add_argument("--overwrite", action="store_true", help="replace OUT and any interrupted run's chunks")
    predict.add_argument(
        "--prepare",
        action="store_true",
        help="register every scan to the MNI template first (extra [prep]; about 15 s a scan)",
    )
    predict.add_argument("--quiet", action="store_true", help="no progress bar")
    predict.set_defaults(func=_cmd_predict)

    report = sub.add_parser(
        "explain-report",
        help="check a model's image explanations: cascading weight randomisation and IG completeness (Markdown)",
    )
    report.add_argument("model", help="a .safetensors model file that reads an image")
    report.add_argument("table", help="a cohort CSV/TSV, e.g. sample_data/subjects.csv")
    report.add_argument(
        "--n", type=_at_least(1), default=4, help="how many subjects, from the top of the table (default 4)"
    )
    report.add_argument("--subjects", default="", help="comma-separated subject IDs instead of the first --n")
    report.add_argument("--out", required=True, help="the Markdown report to write, e.g. reports/trust.md")
    report.add_argument("--methods", default="saliency,gradcam,integrated_gradients,occlusion",
                        help="comma-separated image methods (default: all)")  # fmt: skip
    report.add_argument("--ig-steps", type=_at_least(2), default=8,
                        help="Integrated Gradients' steps under randomisation (twice that for completeness)")  # fmt: skip
    report.add_argument("--baseline", choices=("zeros", "blurred", "template"), default="blurred",
                        help="Integrated Gradients' baseline (default blurred)")  # fmt: skip
    report.add_argument("--logit", action="store_true",
                        help="randomise while explaining the class's logit (log-odds) instead of its probability")  # fmt: skip
    report.add_argument("--seed", type=_at_least(0), default=0, help="seed of the re-initialised weights (default 0)")
    report.add_argument("--device", default="cpu", help="cpu (default), auto, cuda or cuda:N")
    report.add_argument("--quiet", action="store_true", help="no progress bar")
    report.set_defaults(func=_cmd_explain_report)
    fidelity = sub.add_parser(
        "whatif-fidelity",
        help="compare a model's what-if curves with the synthetic generator's exact answer (Markdown)",
    )
    fidelity.add_argument("model", help="an AD (CN / MCI / AD) or brain-age .safetensors model file")
    fidelity.add_argument("cohort", help="a `hyperfusion make-cohort` table (it carries the ground truth)")
    fidelity.add_argument("--n", type=_at_least(1), default=20, help="subjects from the top of the table (default 20)")
    fidelity.add_argument("--fields", default="",
                          help="comma-separated fields to sweep (default AGE,APOE4,ABETA,TAU,PTAU; brain age: sex)")  # fmt: skip
    fidelity.add_argument("--points", type=_at_least(2), default=16, help="grid points per numeric field (default 16)")
    fidelity.add_argument("--out", default="", help="also write the Markdown report here")
    fidelity.add_argument("--curves", default="", help="also write every curve, model and truth, as CSV")
    fidelity.add_argument("--write", action="store_true",
                          help="store each field's check in the model file: the panel then says, for each what-if "
                               "slider, whether it shows what the data hold (use subjects the model never saw)")  # fmt: skip
    fidelity.add_argument("--device", default="cpu", help="cpu (default), auto, cuda or cuda:N")
    fidelity.add_argument("--quiet", action="store_true", help="no progress bar")
    fidelity.set_defaults(func=_cmd_whatif_fidelity)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as stop:  # argparse printed the usage error (exit 2) or --help (exit 0)
        return int(stop.code or 0)
    try:
        args.func(args)
        _leave_distributed()
    except BrokenPipeError:  # the reader stopped reading (`hyperfusion info MODEL | head`): not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # Python's flush at exit stays quiet
        return 0
    except HyperFusionError as err:  # every user-facing error: the message, no traceback
        print(f"hyperfusion {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        kept = " (finished chunks are kept: rerun with --resume)" if args.command == "predict" else ""
        print(f"hyperfusion {args.command}: interrupted{kept}", file=sys.stderr)
        return 130
    return 0


def _leave_distributed() -> None:
    """Under ``torchrun``, leave the process group before the interpreter
    exits. Only after a command that ended well on this rank: its barrier
    would wait for a rank that stopped on an error (a Ctrl+C) until the group
    times out. Only where torch was imported: ``info`` and friends stay light."""
    if "torch.distributed" in sys.modules:
        from .nn.devices import leave_distributed

        leave_distributed()


if __name__ == "__main__":
    sys.exit(main())
