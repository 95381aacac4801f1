"""Tabular schema: encoding, missing values, validation errors, fitting."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from napari_hyperfusion.data.schema import Field, SchemaError, TabularSchema, adni_schema, brain_age_schema


@pytest.fixture(scope="module")
def training_table() -> pd.DataFrame:
    """A table with a strong TAU-PTAU correlation and some gaps."""
    rng = np.random.default_rng(0)
    n = 400
    tau = rng.normal(280, 110, n).clip(80, 1500)
    table = pd.DataFrame(
        {
            "AGE": rng.normal(73, 7, n).clip(55, 95),
            "PTGENDER": rng.choice(["Female", "Male"], n),
            "PTEDUCAT": rng.integers(8, 21, n),
            "APOE4": rng.choice([0, 1, 2], n, p=[0.55, 0.35, 0.10]),
            "ABETA": rng.normal(950, 400, n).clip(200, 3000),
            "TAU": tau,
            "PTAU": (tau / 10.5 + rng.normal(0, 2, n)).clip(8, 150),
            "FDG": rng.normal(1.2, 0.14, n).clip(0.7, 1.8),
            "AV45": rng.normal(1.2, 0.22, n).clip(0.8, 2.2),
            "EXTRA_COLUMN": "ignored",
        }
    )
    table.loc[::3, ["ABETA", "TAU", "PTAU"]] = np.nan
    table.loc[::4, "FDG"] = np.nan
    return table


@pytest.fixture(scope="module")
def schema(training_table) -> TabularSchema:
    return adni_schema().fit(training_table, source="test table")


def full_record(**changes):
    record = dict(AGE=70, PTGENDER="Female", PTEDUCAT=16, APOE4=1, ABETA=900, TAU=300, PTAU=28, FDG=1.2, AV45=1.3)
    record.update(changes)
    return record


def test_adni_schema_encodes_sixteen_numbers_like_the_paper(schema):
    assert schema.n_features == 16
    assert schema.feature_names[:4] == ["AGE", "PTGENDER=Female", "PTGENDER=Male", "PTEDUCAT"]
    assert "AV45_missing" in schema.feature_names and "AGE_missing" not in schema.feature_names


def test_encoding_z_scores_numbers_and_one_hots_categories(schema, training_table):
    vec = schema.encode(full_record(AGE=80, PTGENDER="Male"))
    names = schema.feature_names
    age_mean, age_std = training_table.AGE.mean(), training_table.AGE.std(ddof=0)
    assert vec[names.index("AGE")] == pytest.approx((80 - age_mean) / age_std, rel=1e-5)
    assert vec[names.index("PTGENDER=Female")] == 0.0 and vec[names.index("PTGENDER=Male")] == 1.0
    assert vec[names.index("TAU_missing")] == 0.0
    assert vec.dtype == np.float32 and vec.shape == (16,)


def test_statistics_come_only_from_the_rows_fitted_on(training_table):
    first = adni_schema().fit(training_table.iloc[:200])
    assert first["AGE"].mean == pytest.approx(training_table.AGE.iloc[:200].mean())
    assert first["AGE"].mean != pytest.approx(training_table.AGE.mean(), abs=1e-9)


def test_missing_values_are_filled_and_flagged(schema):
    record = full_record(ABETA=None, TAU=np.nan, PTAU="", FDG="NA")
    filled, missing = schema.fill(record)
    assert missing == {"ABETA", "TAU", "PTAU", "FDG"}
    assert all(isinstance(filled[k], float) for k in missing)
    vec = schema.encode(record)
    names = schema.feature_names
    for field in ("ABETA", "TAU", "PTAU", "FDG"):
        assert vec[names.index(f"{field}_missing")] == 1.0
    assert vec[names.index("AV45_missing")] == 0.0


def test_conditional_fill_uses_the_correlated_fields(schema):
    # PTAU tracks TAU closely in the training table: a high PTAU implies a high TAU
    high, _ = schema.fill(full_record(TAU=None, PTAU=60))
    low, _ = schema.fill(full_record(TAU=None, PTAU=15))
    assert high["TAU"] > schema["TAU"].mean + 150
    assert low["TAU"] < schema["TAU"].mean - 50


def test_mean_fill_for_a_mean_field(schema, training_table):
    filled, missing = schema.fill(full_record(PTEDUCAT=None))
    assert missing == {"PTEDUCAT"}
    assert filled["PTEDUCAT"] == pytest.approx(training_table.PTEDUCAT.mean())


def test_required_fields_may_not_be_missing(schema):
    with pytest.raises(SchemaError, match="Age is required") as err:
        schema.encode(full_record(AGE=None))
    assert err.value.field == "AGE"


@pytest.mark.parametrize(
    "changes, field, message",
    [
        ({"AGE": 130}, "AGE", "Age = 130 is outside the valid range 18 to 110 years"),
        ({"APOE4": 3}, "APOE4", "outside the valid range 0 to 2 alleles"),
        ({"APOE4": 1.5}, "APOE4", "must be a whole number"),
        ({"FDG": "high"}, "FDG", "'high' is not a number"),
        ({"PTGENDER": "X"}, "PTGENDER", "'X' is not allowed; use one of Female, Male"),
        ({"AV45": float("inf")}, "AV45", "not a finite number"),
    ],
)
def test_bad_values_name_the_field_and_the_allowed_values(schema, changes, field, message):
    with pytest.raises(SchemaError, match=message) as err:
        schema.encode(full_record(**changes))
    assert err.value.field == field


def test_aliases_and_case_are_accepted_for_categories(schema):
    a = schema.encode(full_record(PTGENDER="F"))
    b = schema.encode(full_record(PTGENDER="female"))
    np.testing.assert_array_equal(a, b)
    sex = brain_age_schema()
    np.testing.assert_array_equal(sex.encode({"PTGENDER": "M"}), [0.0, 1.0])


def test_encode_frame_names_the_failing_row(schema, training_table):
    table = training_table.head(5).copy()
    table.loc[3, "AGE"] = 12
    with pytest.raises(SchemaError, match="row 3: Age = 12 is outside"):
        schema.encode_frame(table)
    assert schema.encode_frame(training_table.head(5)).shape == (5, 16)


def test_fit_refuses_a_table_without_the_needed_columns(training_table):
    with pytest.raises(SchemaError, match="lacks the column.*APOE4"):
        adni_schema().fit(training_table.drop(columns=["APOE4"]))


def test_schema_round_trips_through_json(schema):
    again = TabularSchema.from_dict(json.loads(json.dumps(schema.to_dict())))
    assert again == schema
    record = full_record(TAU=None, FDG=None)
    np.testing.assert_array_equal(again.encode(record), schema.encode(record))


def test_a_field_definition_that_cannot_work_is_refused():
    with pytest.raises(SchemaError, match="at least two categories"):
        Field("SITE", "category", categories=("only",))
    with pytest.raises(SchemaError, match="unknown kind"):
        Field("X", "text")
