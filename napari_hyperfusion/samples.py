"""The plugin's File > Open Sample entries: synthetic subjects, each scan
opened with its EHR record in ``layer.metadata["ehr_record"]``."""

from __future__ import annotations

from functools import partial

from .data.records import read_record_table, record_from_row
from .io.nifti import read_nifti
from .resources import sample_data_dir

__all__ = ["SUBJECTS", "open_subject", "subject_record"]

# sample key -> (scan path inside sample_data/, table, ID)
SUBJECTS = {
    **{f"SYN_DEMO_0{i}": (f"SYN_DEMO_0{i}.nii.gz", "subjects.csv", f"SYN_DEMO_0{i}") for i in range(1, 6)},
    "sub-young": ("brain_age/sub-young/anat/sub-young_T1w.nii.gz", "brain_age/participants.tsv", "sub-young"),
    "sub-old": ("brain_age/sub-old/anat/sub-old_T1w.nii.gz", "brain_age/participants.tsv", "sub-old"),
    # SYN_DEMO_01 as a scanner would store it (LPI, 1 x 1.2 x 1 mm, moved and rotated): Prepare it first
    "SYN_DEMO_01_native": ("native/SYN_DEMO_01_native.nii.gz", "subjects.csv", "SYN_DEMO_01"),
}


def subject_record(key: str) -> dict:
    """The subject's EHR row with ADNIMERGE names (``sex`` -> ``PTGENDER``,
    ``age`` -> ``AGE``); blanks are ``None`` (not known)."""
    _, table, ident = SUBJECTS[key]
    return record_from_row(read_record_table(sample_data_dir() / table), ident)


def open_subject(key: str) -> list:
    """Layer data for one sample subject (named as synthetic)."""
    data, kwargs, kind = read_nifti(sample_data_dir() / SUBJECTS[key][0])[0]
    record = subject_record(key)
    kwargs["name"] = f"{key} (SYNTHETIC)" if "native" not in key else f"{key} (SYNTHETIC, not in MNI space)"
    kwargs["metadata"]["ehr_record"] = record
    kwargs["metadata"]["subject_id"] = key
    kwargs["metadata"]["synthetic"] = True
    return [(data, kwargs, kind)]


# one callable per sample, named in napari.yaml
demo_01 = partial(open_subject, "SYN_DEMO_01")
demo_02 = partial(open_subject, "SYN_DEMO_02")
demo_03 = partial(open_subject, "SYN_DEMO_03")
demo_04 = partial(open_subject, "SYN_DEMO_04")
demo_05 = partial(open_subject, "SYN_DEMO_05")
brain_age_young = partial(open_subject, "sub-young")
brain_age_old = partial(open_subject, "sub-old")
native_01 = partial(open_subject, "SYN_DEMO_01_native")
