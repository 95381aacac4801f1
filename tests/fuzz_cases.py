"""Generated corruptions of the files a user hands us, and what each one does.

Run as a script, in a child process with a cap on its address space::

    python tests/fuzz_cases.py {model,nifti,csv} WORKDIR [--cap-mib N] [--limit N]

It writes corrupted copies of real files (a shipped model file, a NIfTI
written by nibabel, the sample cohort table) into WORKDIR, opens each the
way the plugin and the CLI do, and prints one JSON line per case:
``{"case", "outcome", "error", "message"}`` where ``outcome`` is

- ``"refused"``: a :class:`~napari_hyperfusion.errors.HyperFusionError`
  (the message the user sees);
- ``"accepted"``: it opened, and what it gave was checked (finite
  predictions, output names that are a list of names, finite views);
- ``"crash"``: any other exception, or a check that failed: a defect.

The cap (``RLIMIT_AS``, set after the imports) turns an allocation above the
bound into a ``MemoryError``, which is a crash: a file cannot make us
allocate more than the cap. ``tests/test_fuzz.py`` runs the three corpora
and asserts. Corruptions are seeded, so a failure reproduces.
"""

from __future__ import annotations

import argparse
import copy
import csv
import gzip
import io
import json
import os
import pickle
import random
import resource
import shutil
import struct
import sys
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
MODEL = ROOT / "models" / "ad_hyperfusion.safetensors"
SAMPLE_TABLE = ROOT / "sample_data" / "subjects.csv"
MARKER_NAME = "EXECUTED"  # a payload that runs creates this file in WORKDIR

# -- helpers ----------------------------------------------------------------


class _Payload:
    """Unpickling this runs ``open(marker, "w")``: proof that a file was executed."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _split_safetensors(raw: bytes) -> tuple[dict, bytes]:
    (n,) = struct.unpack("<Q", raw[:8])
    return json.loads(raw[8 : 8 + n]), raw[8 + n :]


def _join_safetensors(header: dict | bytes, data: bytes) -> bytes:
    text = header if isinstance(header, bytes) else json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text + data


def _deep(levels: int):
    value: object = 1
    for _ in range(levels):
        value = [value]
    return value


SWAPS: list[tuple[str, object]] = [
    ("text", "not a number"), ("html", "<b>bold</b><img src=x onerror=alert(1)>"), ("zero", 0), ("negative", -1),
    ("huge int", 10**30), ("huge float", 1e308), ("nan", float("nan")), ("infinity", float("inf")),
    ("null", None), ("true", True), ("list", [1, "a", None]), ("dict", {"a": {"b": 1}}), ("empty text", ""),
    ("long text", "x" * 200_000), ("nested", _deep(600)), ("nul byte", "a\x00b"), ("rtl", "\u202eevil"),
]  # fmt: skip


def _paths(value, prefix=(), depth=0) -> Iterator[tuple]:
    """Paths into a JSON document: every key down to depth 4, and the first
    and last element of each list."""
    if depth > 4:
        return
    if isinstance(value, dict):
        for key, child in value.items():
            yield (*prefix, key)
            yield from _paths(child, (*prefix, key), depth + 1)
    elif isinstance(value, list) and value:
        for index in sorted({0, len(value) - 1}):
            yield (*prefix, index)
            yield from _paths(value[index], (*prefix, index), depth + 1)


def _set(document, path, value) -> None:
    for key in path[:-1]:
        document = document[key]
    if value is _DELETE:
        del document[path[-1]]
    else:
        document[path[-1]] = value


_DELETE = object()

# -- model files -------------------------------------------------------------


def model_cases(work: Path, rng: random.Random, limit: int) -> Iterator[tuple[str, Path]]:
    from napari_hyperfusion.io.model_file import METADATA_KEY

    raw = MODEL.read_bytes()
    header, data = _split_safetensors(raw)
    meta = json.loads(header["__metadata__"][METADATA_KEY])

    def with_meta(document) -> bytes:
        head = copy.deepcopy(header)
        head["__metadata__"][METADATA_KEY] = json.dumps(document)
        return _join_safetensors(head, data)

    def write(name: str, content: bytes) -> tuple[str, Path]:
        path = work / f"{len(list(work.iterdir())):04d}.safetensors"
        path.write_bytes(content)
        return name, path

    # the cases, by name
    named: list[tuple[str, Callable[[dict], None]]] = [
        ("400 base filters", lambda m: m["config"].update(base_filters=400)),
        ("512^3 input grid", lambda m: (m["config"].update(input_shape=[512, 512, 512]),
                                        m["image"].update(shape=[512, 512, 512]))),
        ("thresholds are text", lambda m: m.update(thresholds=["a", "b", "c"])),
        ("outputs as a string", lambda m: m["outputs"].update(names="CNMCIAD")),
        ("image spacing zero", lambda m: m["image"].update(spacing_mm=0)),
        ("image grid huge", lambda m: m["image"].update(shape=[100000, 100000, 100000])),
        ("deep nesting in metrics", lambda m: m.update(metrics=_deep(50_000))),
        ("html model name", lambda m: m.update(name="<h1>Trusted</h1><br>" * 5)),
        ("typicality subspace of the wrong width", lambda m: m["input_stats"]["image"].update(mean=[0.0] * 5)),
        ("schema field kind unknown", lambda m: m["schema"]["fields"][0].update(kind="tensor")),
        ("config of the wrong type", lambda m: m.update(config=[1, 2, 3])),
    ]  # fmt: skip
    for name, change in named:
        document = copy.deepcopy(meta)
        try:
            change(document)
            yield write(name, with_meta(document))
        except RecursionError:  # json.dumps cannot write it either: write the text by hand
            text = json.dumps({**meta, "metrics": None}).replace(
                '"metrics": null', '"metrics": ' + "[" * 50_000 + "]" * 50_000
            )
            head = copy.deepcopy(header)
            head["__metadata__"][METADATA_KEY] = text
            yield write(name, _join_safetensors(head, data))

    # the safetensors layer
    head = copy.deepcopy(header)
    head["__metadata__"][METADATA_KEY] = 5
    yield write("metadata value is a number", _join_safetensors(head, data))
    key = next(k for k in header if k != "__metadata__")
    for field, value in (("data_offsets", _DELETE), ("dtype", "F128"), ("shape", [-1]), ("shape", "abc"),
                         ("data_offsets", [10, 0]), ("data_offsets", [0, 10**15])):  # fmt: skip
        head = copy.deepcopy(header)
        _set(head, (key, field), value)
        yield write(f"tensor {field} -> {value if value is not _DELETE else 'missing'}", _join_safetensors(head, data))
    yield write("header length beyond the file", struct.pack("<Q", 10**9) + raw[8:])
    yield write("header not JSON", _join_safetensors(b"{" + bytes(range(1, 200)), data))
    yield write("header latin-1", _join_safetensors(json.dumps(header).encode().replace(b"CN", b"\xe9\xe9"), data))
    yield write("header is a list", _join_safetensors(b"[1, 2, 3]", data))
    yield write("empty file", b"")
    for cut in (4, 8, 100, len(raw) // 2, len(raw) - 1):
        yield write(f"truncated at {cut} bytes", raw[:cut])
    yield write("a pickle that runs code", pickle.dumps(_Payload(work / MARKER_NAME)))
    yield write("torch.save zip", b"PK\x03\x04" + raw[4:200])
    # NaN weights: every float tensor's first value
    broken = bytearray(data)
    for k, v in header.items():
        if k != "__metadata__" and v["dtype"] in ("F16", "F32"):
            start = v["data_offsets"][0]
            broken[start : start + (2 if v["dtype"] == "F16" else 4)] = (
                b"\x00\x7e" if v["dtype"] == "F16" else struct.pack("<f", float("nan"))
            )
    yield write("NaN weights", _join_safetensors(header, bytes(broken)))

    # generated: a swap at a random path, seeded
    paths = list(_paths(meta))
    for _ in range(limit):
        path = rng.choice(paths)
        label, value = rng.choice([*SWAPS, ("deleted", _DELETE)])
        document = copy.deepcopy(meta)
        _set(document, path, value if label in ("nested", "deleted") else copy.deepcopy(value))
        try:
            content = with_meta(document)
        except (RecursionError, ValueError):
            continue
        yield write(f"{'.'.join(map(str, path))} -> {label}", content)


def check_model(path: Path) -> str:
    import contextlib

    import torch

    from napari_hyperfusion.cli import main as cli
    from napari_hyperfusion.data.preprocess import load_scan
    from napari_hyperfusion.infer.subject import predict_subject
    from napari_hyperfusion.io.model_file import load_model

    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        status = cli(["info", str(path)])  # hyperfusion info: every metadata section printed
    assert status in (0, 2), f"hyperfusion info exited {status}"
    model = load_model(path, device="cpu")
    info = model.info
    assert isinstance(info.outputs, list) and all(isinstance(o, str) and o for o in info.outputs), info.outputs
    assert len(info.outputs) == info.config.n_outputs
    c = info.config
    image = torch.zeros((1, 1, *c.input_shape)) if c.uses_image else None
    with torch.no_grad():
        out = model.net(image, torch.zeros((1, c.input_dim)))
    assert torch.isfinite(out).all(), f"non-finite output {out}"
    # the panel's Predict: the input gate (input_stats.scan), the OOD flags (input_stats), the schema
    record = {"AGE": 70, "PTGENDER": "Female", "PTEDUCAT": 16, "APOE4": 1}
    result = predict_subject(model, load_scan(SAMPLE_TABLE.parent / "SYN_DEMO_01.nii.gz"), record)
    assert np.isfinite(np.asarray(result.values, dtype=float)).all(), "non-finite prediction"
    assert all(isinstance(w, str) for w in result.warnings)
    return f"{info.name[:60]!r}: {tuple(out.shape)}"


# -- NIfTI --------------------------------------------------------------------


def _base_nifti(work: Path) -> Path:
    import nibabel as nib

    rng = np.random.default_rng(0)
    data = np.zeros((36, 44, 36), np.float32)
    data[6:30, 6:38, 6:30] = 100 + 10 * rng.standard_normal((24, 32, 24))
    affine = np.diag([4.0, 4.0, 4.0, 1.0])
    affine[:3, 3] = [-72, -104, -72]
    path = work / "base.nii"
    nib.save(nib.Nifti1Image(data, affine), path)
    return path


# byte offsets in a NIfTI-1 header: (name, offset, struct format)
_NIFTI_FIELDS = [("sizeof_hdr", 0, "<i"), ("dim0", 40, "<h"), ("dim1", 42, "<h"), ("dim2", 44, "<h"),
                 ("dim3", 46, "<h"), ("dim4", 48, "<h"), ("datatype", 70, "<h"), ("bitpix", 72, "<h"),
                 ("pixdim1", 80, "<f"), ("pixdim2", 84, "<f"), ("vox_offset", 108, "<f"), ("scl_slope", 112, "<f"),
                 ("scl_inter", 116, "<f"), ("qform_code", 252, "<h"), ("sform_code", 254, "<h"),
                 ("srow_x0", 280, "<f"), ("srow_y1", 300, "<f"), ("srow_z3", 324, "<f")]  # fmt: skip
_NIFTI_VALUES = {"<h": [0, -1, 32767, 2, 9999, 128, 2048], "<i": [0, -1, 2**31 - 1],
                 "<f": [0.0, -1.0, float("nan"), float("inf"), 1e38, 1e-30]}  # fmt: skip


def nifti_cases(work: Path, rng: random.Random, limit: int) -> Iterator[tuple[str, Path]]:
    base = _base_nifti(work)
    raw = base.read_bytes()

    def write(name: str, content: bytes, suffix: str = ".nii") -> tuple[str, Path]:
        path = work / f"{len(list(work.iterdir())):04d}{suffix}"
        path.write_bytes(content)
        return name, path

    for name, offset, fmt in _NIFTI_FIELDS:
        for value in _NIFTI_VALUES[fmt]:
            mutated = bytearray(raw)
            mutated[offset : offset + struct.calcsize(fmt)] = struct.pack(fmt, value)
            yield write(f"{name} = {value}", bytes(mutated))
    yield write("all three dims 32767", raw[:42] + struct.pack("<hhh", 32767, 32767, 32767) + raw[48:])
    for cut in (0, 100, 348, 352, 352 + (len(raw) - 352) // 2, len(raw) - 1):
        yield write(f"truncated at {cut} bytes", raw[:cut])
    packed = gzip.compress(raw)
    yield write("gzip truncated", packed[: len(packed) // 2], ".nii.gz")
    yield write("gzip of garbage", gzip.compress(bytes(rng.randrange(256) for _ in range(4000))), ".nii.gz")
    yield write("not gzip but named .nii.gz", raw, ".nii.gz")
    yield write("a text file", b"this is not an image\n" * 20)
    yield write("a pickle that runs code", pickle.dumps(_Payload(work / MARKER_NAME)))
    for i in range(limit):  # random bytes in the header
        mutated = bytearray(raw)
        for _ in range(rng.randint(1, 6)):
            mutated[rng.randrange(348)] = rng.randrange(256)
        yield write(f"random header bytes #{i}", bytes(mutated))


def check_nifti(path: Path) -> str:
    from napari_hyperfusion.data.preprocess import ModelGrid, load_scan, prepare_views
    from napari_hyperfusion.io.nifti import read_nifti

    layers = read_nifti(str(path))  # what napari's File > Open does
    assert layers and all(np.isfinite(np.asarray(d, dtype=np.float64)).all() for d, _, _ in layers)
    scan = load_scan(path)
    views = prepare_views(scan, ModelGrid(crop="whole", shape=(40, 48, 40), spacing_mm=4.0))
    assert np.isfinite(views).all(), "non-finite views"
    return f"shape {scan.data.shape}"


# -- CSV ----------------------------------------------------------------------

_CELL_VALUES = ["abc", "1e308", "-1e308", "inf", "nan", "", "=cmd|' /C calc'!A0", "9" * 5000, "a\x00b",
                "<b>x</b>", "-5", "1,5", "ÄÖÜ", "../../../../etc/passwd", "🧠"]  # fmt: skip


def csv_cases(work: Path, rng: random.Random, limit: int) -> Iterator[tuple[str, Path]]:
    import pandas as pd

    table = pd.read_csv(SAMPLE_TABLE, dtype=str, keep_default_na=False).head(2)
    table["IMAGE"] = [str(SAMPLE_TABLE.parent / p) for p in table["IMAGE"]]
    columns = ["PTID", "AGE", "PTGENDER", "PTEDUCAT", "APOE4", "ABETA", "TAU", "PTAU", "FDG", "AV45", "IMAGE"]

    def write(name: str, content: bytes | pd.DataFrame, suffix: str = ".csv") -> tuple[str, Path]:
        path = work / f"{len(list(work.iterdir())):04d}{suffix}"
        if isinstance(content, pd.DataFrame):
            content.to_csv(path, index=False)
        else:
            path.write_bytes(content)
        return name, path

    yield write("as shipped", table)
    for column in columns:
        for value in _CELL_VALUES:
            if rng.random() < 0.5 and value not in ("abc", "=cmd|' /C calc'!A0", "inf"):
                continue  # a seeded half of the rarer values, all of the issue's
            mutated = table.copy()
            mutated.loc[0, column] = value
            yield write(f"{column} = {value[:20]!r}", mutated)
    yield write("no AGE column", table.drop(columns="AGE"))
    yield write("duplicate subject", pd.concat([table, table.head(1)]))
    yield write("duplicate column names", b"PTID,AGE,AGE\nA,1,2\n")
    yield write("image is a folder", table.assign(IMAGE=str(SAMPLE_TABLE.parent)))
    yield write("image is the table", table.assign(IMAGE=str(SAMPLE_TABLE)))
    csv_text = table.to_csv(index=False)
    yield write("UTF-16", csv_text.encode("utf-16"))
    yield write("UTF-8 with BOM", csv_text.encode("utf-8-sig"))
    yield write("latin-1 byte", csv_text.replace("Female", "F\xe9male").encode("latin-1"))
    yield write("CRLF", csv_text.replace("\n", "\r\n").encode())
    yield write("unbalanced quote", csv_text.replace("SYN_DEMO_02", '"SYN_DEMO_02').encode())
    yield write("semicolons", csv_text.replace(",", ";").encode())
    yield write("empty file", b"")
    yield write("header only", csv_text.splitlines()[0].encode() + b"\n")
    yield write("binary garbage", bytes(rng.randrange(256) for _ in range(3000)))
    yield write("10,000 columns", table.assign(**{f"X{i}": "1" for i in range(10_000)}))
    yield write("a pickle that runs code", pickle.dumps(_Payload(work / MARKER_NAME)))
    for i in range(limit):
        text = bytearray(csv_text.encode())
        for _ in range(rng.randint(1, 4)):
            text[rng.randrange(len(text))] = rng.choice(b',"\n\r\x00;=abc9.-')
        yield write(f"random bytes #{i}", bytes(text))


def check_csv(path: Path) -> str:
    from napari_hyperfusion.data.records import read_record_table, record_from_row
    from napari_hyperfusion.infer.cohort import predict_rows, read_model_cohort
    from napari_hyperfusion.io.csv_text import FORMULA_STARTS, _is_number, to_csv_text  # the writer's own rule

    model = _model()
    table = read_record_table(path)  # the panel's "Load record from CSV..."
    for subject in table.frame[table.id_column]:
        record_from_row(table, subject, model.info.schema)
    cohort = read_model_cohort(model, path)  # hyperfusion predict
    frame = predict_rows(model, cohort)
    shown = frame[frame["input_qc"] != "refuse"]
    values = shown[[c for c in frame.columns if c.startswith("prob_")]].to_numpy(dtype=float)
    assert np.isfinite(values).all(), "non-finite probabilities"
    for row in csv.reader(io.StringIO(to_csv_text(frame))):
        for cell in row:
            assert not cell.startswith(FORMULA_STARTS) or _is_number(cell), f"a formula reaches the CSV: {cell[:40]}"
    return f"{len(frame)} rows"


_MODEL = []


def _model():
    if not _MODEL:
        from napari_hyperfusion.io.model_file import load_model

        _MODEL.append(load_model(MODEL, device="cpu"))
    return _MODEL[0]


# -- the runner -----------------------------------------------------------------

CORPORA = {"model": (model_cases, check_model), "nifti": (nifti_cases, check_nifti), "csv": (csv_cases, check_csv)}


def _cap_address_space(extra_mib: int) -> None:
    """Allow ``extra_mib`` more address space than the process has now."""
    with open("/proc/self/statm") as fh:
        pages = int(fh.read().split()[0])
    now = pages * os.sysconf("SC_PAGE_SIZE")
    limit = now + extra_mib * 2**20
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("corpus", choices=sorted(CORPORA))
    parser.add_argument("work")
    parser.add_argument("--cap-mib", type=int, default=1536)
    parser.add_argument("--limit", type=int, default=60, help="generated (random) cases besides the named ones")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    import torch

    import napari_hyperfusion.data.preprocess  # noqa: F401  (imports before the cap)
    import napari_hyperfusion.infer.cohort  # noqa: F401
    import napari_hyperfusion.io.model_file  # noqa: F401

    torch.set_num_threads(1)
    work = Path(args.work)
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    cases_dir = work / "cases"
    cases_dir.mkdir()
    generate, check = CORPORA[args.corpus]
    if args.corpus == "csv":
        _model()  # loaded before the cap: the cap is for what the files make us allocate
    _cap_address_space(args.cap_mib)
    from napari_hyperfusion.errors import HyperFusionError

    for name, path in generate(cases_dir, random.Random(args.seed), args.limit):
        row = {"case": name, "file": path.name}
        try:
            row.update(outcome="accepted", message=check(path))
        except HyperFusionError as err:
            row.update(outcome="refused", error=type(err).__name__, message=str(err))
        except BaseException as err:  # noqa: BLE001 - anything else is what this suite looks for
            row.update(outcome="crash", error=type(err).__name__, message=str(err)[:500],
                       traceback=traceback.format_exc()[-2000:])  # fmt: skip
        print(json.dumps(row), flush=True)
    print(json.dumps({"executed": (cases_dir / MARKER_NAME).exists() or (work / MARKER_NAME).exists()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
