"""The what-if narration: one sentence per change, flags against clinical
expectation and outside the training data."""

from __future__ import annotations

from napari_hyperfusion.analysis.narration import narrate
from napari_hyperfusion.data.schema import adni_schema, brain_age_schema

AD = ["CN", "MCI", "AD"]
PATIENT = {"AGE": 62.0, "PTGENDER": "Female", "APOE4": 0.0, "ABETA": 600.0, "FDG": 1.2}


def test_older_with_p_ad_falling_is_said_and_flagged():
    lines = narrate(adni_schema(), AD, PATIENT, {**PATIENT, "AGE": 85.0}, [0.01, 0.0, 0.99], [0.5, 0.36, 0.14],
                    map_ratio=0.4)  # fmt: skip
    assert lines[0] == (
        "At Age 85 years instead of 62, P(AD) falls from 99 % to 14 %; the generated network moved 0.40 typical "
        "inter-subject distances."
    )
    assert lines[1].startswith("Unexpected: P(AD) fell as Age rose, against the clinical expectation")


def test_the_expected_direction_and_mixed_changes_raise_no_flag():
    up = narrate(adni_schema(), AD, PATIENT, {**PATIENT, "APOE4": 2.0}, [0.6, 0.3, 0.1], [0.2, 0.3, 0.5])
    assert up == ["At APOE e4 alleles 2 alleles instead of 0, P(AD) rises from 10 % to 50 %."]
    # APOE4 up (towards AD) and Abeta up (away from AD): no single expectation, no flag
    mixed = narrate(adni_schema(), AD, PATIENT, {**PATIENT, "APOE4": 2.0, "ABETA": 1500.0}, [0.2, 0.3, 0.5],
                    [0.6, 0.3, 0.1])  # fmt: skip
    assert len(mixed) == 1 and "APOE e4 alleles 2 alleles instead of 0 and CSF Abeta42 1.5e+03 pg/ml" in mixed[0]
    # lower FDG raising P(AD) is expected; lower FDG lowering it is not
    assert len(narrate(adni_schema(), AD, PATIENT, {**PATIENT, "FDG": 0.8}, [0.5, 0.3, 0.2], [0.3, 0.3, 0.4])) == 1
    flagged = narrate(adni_schema(), AD, PATIENT, {**PATIENT, "FDG": 0.8}, [0.3, 0.3, 0.4], [0.5, 0.3, 0.2])
    assert "P(AD) fell as FDG-PET fell" in flagged[1]


def test_values_outside_the_training_rows_are_flagged_and_no_change_is_said():
    ranges = {"AGE": {"min": 55, "max": 90, "p1": 57.0, "p99": 88.0}, "PTGENDER": {"levels": ["Female"]}}
    lines = narrate(adni_schema(), AD, PATIENT, {**PATIENT, "AGE": 100.0, "PTGENDER": "Male"}, [0.3, 0.3, 0.4],
                    [0.3, 0.3, 0.4], ranges=ranges)  # fmt: skip
    assert "P(AD) stays at 40 %" in lines[0]
    assert any("Age 100 years is beyond the training rows' 1st-99th percentiles (57 to 88)" in x for x in lines)
    assert any("Sex = Male never occurs in the training data" in x for x in lines)
    assert narrate(adni_schema(), AD, PATIENT, dict(PATIENT), [0.3, 0.3, 0.4], [0.3, 0.3, 0.4]) == [
        "At the patient's own values: nothing changed."
    ]


def test_brain_age_is_told_in_years():
    patient = {"sex": "F"}
    schema = brain_age_schema()
    name = schema.fields[0].name
    patient = {name: schema.fields[0].categories[0]}
    whatif = {name: schema.fields[0].categories[1]}
    lines = narrate(schema, ["brain age"], patient, whatif, [64.2], [66.0], kind="regression", unit="years")
    assert lines == [f"At {schema.fields[0].display_name} {whatif[name]} instead of {patient[name]}, brain age rises "
                     "from 64.2 to 66.0 years."]  # fmt: skip


def test_generated_layer_changes_are_told_on_a_plain_words_scale():
    from napari_hyperfusion.analysis.narration import change_bar, change_words

    assert [change_words(r) for r in (0.0, 0.05, 0.25, 0.5, 1.4)] == [
        "barely moved", "a small change", "a clear change", "a large change", "a different network",
    ]  # fmt: skip
    assert change_bar(0.3) == "\u2588" * 3 + "\u2591" * 7 and change_bar(2.0) == "\u2588" * 10
