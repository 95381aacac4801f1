"""The tabular (EHR) schema a model expects, and the encoding of records.

A :class:`TabularSchema` says, for each field, what it is (kind, unit, valid
range, categories), how it is normalised, how a missing value is filled and
whether a 0/1 "was missing" indicator is fed to the model. It turns a record
(a ``dict`` or a pandas row) into the model's input vector and refuses bad
values with a message that names the field and the allowed values.

Field names follow ADNIMERGE (AGE, PTGENDER, PTEDUCAT, APOE4, ABETA, TAU,
PTAU, FDG, AV45). Missing values are filled by one of:

- ``"required"``: the field may not be missing;
- ``"mean"``: the training mean (or the most frequent category);
- ``"conditional"``: the conditional mean of a multivariate normal fitted to
  the numeric fields of the training data, given the fields that *are*
  known. This is what iterative imputation with linear regressors converges
  to, but it is closed-form, deterministic and fits in JSON.

All statistics come from :meth:`TabularSchema.fit` on a training table; a
schema is plain data and round-trips through :meth:`to_dict`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Literal

import numpy as np

from ..errors import SchemaError

__all__ = ["Field", "TabularSchema", "SchemaError", "adni_schema", "brain_age_schema", "split_censored"]

Kind = Literal["number", "binary", "category"]
FillRule = Literal["required", "mean", "conditional"]
KINDS = ("number", "binary", "category")
FILL_RULES = ("required", "mean", "conditional")


def _shown(value: object, most: int = 60) -> str:
    """``repr(value)`` cut to ``most`` characters: a cell may hold anything."""
    text = repr(value)
    return text if len(text) <= most else text[: most - 1] + "…"


def split_censored(value: Any) -> tuple[Any, str | None]:
    """``(value, marker)``: a censored number such as ADNIMERGE's ``">1700"``
    or ``"<8"`` as its stated bound (``"1700"``) and the marker (``">"``);
    anything else unchanged with marker ``None``.

    Example:
        >>> split_censored(">1700"), split_censored("<=80"), split_censored(42.0)
        (('1700', '>'), ('80', '<='), (42.0, None))
    """
    if isinstance(value, str):
        text = value.strip()
        for marker in ("<=", ">=", "<", ">"):
            if text.startswith(marker) and len(text) > len(marker):
                return text[len(marker) :].strip(), marker
    return value, None


def _is_missing(value: Any) -> bool:
    if value is None:
        return True
    if isinstance(value, str):
        return value.strip() in ("", "NA", "NaN", "nan")
    try:
        return bool(math.isnan(float(value)))
    except (TypeError, ValueError):
        return False


@dataclass(frozen=True)
class Field:
    """One tabular field.

    ``minimum``/``maximum`` are the valid range in ``unit``; ``mean``/``std``
    the normalisation statistics (numbers only); ``categories`` the allowed
    values of a category in the order of its one-hot code, with ``aliases``
    mapping other spellings (e.g. ``"F" -> "Female"``). A binary field is a
    0/1 number encoded as is.
    """

    name: str
    kind: Kind
    label: str = ""
    unit: str = ""
    minimum: float | None = None
    maximum: float | None = None
    integer: bool = False
    categories: tuple[str, ...] = ()
    aliases: dict[str, str] = field(default_factory=dict)
    fill: FillRule = "mean"
    missing_indicator: bool = False
    mean: float = 0.0
    std: float = 1.0
    fill_value: float | str | None = None
    description: str = ""

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise SchemaError(f"{self.name}: unknown kind {self.kind!r}; use one of {KINDS}", self.name)
        if self.fill not in FILL_RULES:
            raise SchemaError(f"{self.name}: unknown fill {self.fill!r}; use one of {FILL_RULES}", self.name)
        if self.kind == "category" and len(self.categories) < 2:
            raise SchemaError(f"{self.name}: a category needs at least two categories", self.name)
        if self.kind == "category" and self.fill == "conditional" and len(self.categories) != 2:
            raise SchemaError(f"{self.name}: conditional fill needs a number or a two-level category", self.name)
        if self.std <= 0:
            raise SchemaError(f"{self.name}: std must be positive, got {self.std}", self.name)
        object.__setattr__(self, "categories", tuple(self.categories))

    @property
    def display_name(self) -> str:
        return self.label or self.name

    @property
    def is_numeric(self) -> bool:
        """Numbers, binaries and two-level categories take part in the joint
        normal used for conditional filling (a two-level category as 0/1)."""
        return self.kind != "category" or len(self.categories) == 2

    @property
    def encoded_names(self) -> list[str]:
        """Names of the model-input columns this field produces."""
        if self.kind == "category":
            names = [f"{self.name}={c}" for c in self.categories]
        else:
            names = [self.name]
        if self.missing_indicator:
            names.append(f"{self.name}_missing")
        return names

    def range_text(self) -> str:
        if self.kind == "category":
            return "one of " + ", ".join(self.categories)
        if self.kind == "binary":
            return "0 or 1"
        unit = f" {self.unit}" if self.unit else ""
        return f"{_fmt(self.minimum)} to {_fmt(self.maximum)}{unit}"

    def parse(self, value: Any) -> float | str | None:
        """Validate one raw value; ``None`` for missing. Numbers come back as
        ``float``, categories as their canonical spelling."""
        if _is_missing(value):
            return None
        if self.kind == "category":
            text = str(value).strip()
            lookup = {c.lower(): c for c in self.categories}
            lookup.update({k.lower(): v for k, v in self.aliases.items()})
            if text.lower() not in lookup:
                raise SchemaError(
                    f"{self.display_name}: {_shown(text)} is not allowed; use {self.range_text()}",
                    self.name,
                )
            return lookup[text.lower()]
        bound, _ = split_censored(value)
        try:
            number = float(bound)
        except (TypeError, ValueError):
            raise SchemaError(
                f"{self.display_name}: {_shown(value)} is not a number; expected {self.range_text()}",
                self.name,
            ) from None
        if not math.isfinite(number):
            raise SchemaError(f"{self.display_name}: {_shown(value)} is not a finite number", self.name)
        if self.kind == "binary" and number not in (0.0, 1.0):
            raise SchemaError(f"{self.display_name}: {_shown(value)} must be 0 or 1", self.name)
        if self.integer and number != round(number):
            raise SchemaError(f"{self.display_name}: {_shown(value)} must be a whole number", self.name)
        low = -math.inf if self.minimum is None else self.minimum
        high = math.inf if self.maximum is None else self.maximum
        if not low <= number <= high:
            raise SchemaError(
                f"{self.display_name} = {_fmt(number)} is outside the valid range {self.range_text()}",
                self.name,
            )
        return number

    def as_number(self, value: float | str) -> float:
        """A parsed value on the numeric axis of the joint normal."""
        if self.kind == "category":
            return float(self.categories.index(str(value)))
        return float(value)

    def from_number(self, number: float) -> float | str:
        """Inverse of :meth:`as_number`, used to report a filled value."""
        if self.kind == "category":
            return self.categories[int(number >= 0.5)]
        if self.kind == "binary":
            return float(number >= 0.5)
        low = -math.inf if self.minimum is None else self.minimum
        high = math.inf if self.maximum is None else self.maximum
        return float(min(max(number, low), high))


def _fmt(x: float | None) -> str:
    if x is None:
        return "?"
    return f"{x:g}"


@dataclass(frozen=True)
class TabularSchema:
    """An ordered list of fields plus the joint statistics used for filling.

    ``joint_mean``/``joint_cov`` cover the fields for which
    :attr:`Field.is_numeric` is true, in schema order.
    """

    fields: tuple[Field, ...]
    joint_mean: tuple[float, ...] = ()
    joint_cov: tuple[tuple[float, ...], ...] = ()
    fitted_on: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "fields", tuple(self.fields))
        names = [f.name for f in self.fields]
        if len(set(names)) != len(names):
            raise SchemaError(f"duplicate field names in schema: {names}")

    # -- structure ---------------------------------------------------------
    @property
    def names(self) -> list[str]:
        return [f.name for f in self.fields]

    @property
    def feature_names(self) -> list[str]:
        """Names of the encoded vector's entries, in order."""
        return [n for f in self.fields for n in f.encoded_names]

    @property
    def n_features(self) -> int:
        return len(self.feature_names)

    def __getitem__(self, name: str) -> Field:
        for f in self.fields:
            if f.name == name:
                return f
        raise KeyError(name)

    @property
    def joint_fields(self) -> list[Field]:
        """The numeric fields, in the order of ``joint_mean`` / ``joint_cov``."""
        return [f for f in self.fields if f.is_numeric]

    # -- parsing and filling --------------------------------------------------
    def parse(self, record: Mapping[str, Any]) -> dict[str, float | str | None]:
        """Validate a record: ``{name: value or None}`` for every field.

        Columns the schema does not know are ignored (a CSV row carries
        more than the model uses). A missing column counts as missing.
        """
        if hasattr(record, "to_dict"):  # a pandas Series
            record = record.to_dict()
        return {f.name: f.parse(record.get(f.name)) for f in self.fields}

    def fill(self, record: Mapping[str, Any]) -> tuple[dict[str, float | str], set[str]]:
        """Parse and fill missing values: ``(complete record, names filled)``."""
        parsed = self.parse(record)
        missing = {n for n, v in parsed.items() if v is None}
        for name in sorted(missing):
            if self[name].fill == "required":
                raise SchemaError(f"{self[name].display_name} is required and may not be missing", name)
        if not missing:
            return dict(parsed), set()  # type: ignore[arg-type]
        conditional = self._conditional_fill(parsed, missing)
        out: dict[str, float | str] = {}
        for f in self.fields:
            value = parsed[f.name]
            if value is None:
                value = conditional.get(f.name, f.fill_value)
                if value is None:
                    value = f.categories[0] if f.kind == "category" else f.mean
            out[f.name] = value
        return out, missing

    def _conditional_fill(self, parsed: Mapping[str, float | str | None], missing: set[str]) -> dict[str, float | str]:
        """Conditional mean of the joint normal for the missing
        ``"conditional"`` fields given every known numeric field."""
        joint = self.joint_fields
        targets = [i for i, f in enumerate(joint) if f.name in missing and f.fill == "conditional"]
        if not targets or not self.joint_mean:
            return {}
        known = [i for i, f in enumerate(joint) if parsed[f.name] is not None]
        x_known = np.array([joint[i].as_number(parsed[joint[i].name]) for i in known])  # type: ignore[arg-type]
        estimate, _, _ = self.conditional_normal(targets, known, x_known)
        return {joint[i].name: joint[i].from_number(v) for i, v in zip(targets, estimate)}

    def conditional_normal(
        self, targets: list[int], known: list[int], x_known: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The joint normal of the numeric fields (``joint_mean`` /
        ``joint_cov``) conditioned on some of them.

        Args:
            targets: indices into :attr:`joint_fields` of the fields to predict, ``[T]``.
            known: indices of the known fields, ``[K]`` (may be empty).
            x_known: their values in the fields' units, ``[K]``.

        Returns:
            ``(mean [T], cov [T, T], weights [K, T])``: the conditional mean
            and covariance, and the regression weights of the targets on the
            known fields (the mean is ``mu_t + weights.T @ (x_known - mu_k)``).
        """
        mu = np.asarray(self.joint_mean, dtype=np.float64)
        cov = np.asarray(self.joint_cov, dtype=np.float64)
        mean, out = mu[targets].copy(), cov[np.ix_(targets, targets)].copy()
        weights = np.zeros((len(known), len(targets)))
        if known:
            s_kk = cov[np.ix_(known, known)] + 1e-9 * np.eye(len(known))
            s_tk = cov[np.ix_(targets, known)]
            # the mean keeps its own solve (not weights.T @ d): the conditional fill's values stay
            # bit for bit what they were before the weights were returned too
            mean += s_tk @ np.linalg.solve(s_kk, np.asarray(x_known, dtype=np.float64) - mu[known])
            weights = np.linalg.solve(s_kk, s_tk.T)
            out -= s_tk @ weights
        return mean, out, weights

    # -- encoding ------------------------------------------------------------
    def encode(self, record: Mapping[str, Any]) -> np.ndarray:
        """One record to the model's input vector, ``float32 [n_features]``.

        Numbers are z-scored with the schema's statistics, binaries kept as
        0/1, categories one-hot; a field with an indicator adds 1.0 when the
        value was missing (and filled), else 0.0.
        """
        filled, missing = self.fill(record)
        out: list[float] = []
        for f in self.fields:
            value = filled[f.name]
            if f.kind == "category":
                out.extend(1.0 if c == value else 0.0 for c in f.categories)
            elif f.kind == "binary":
                out.append(float(value))
            else:
                out.append((float(value) - f.mean) / f.std)
            if f.missing_indicator:
                out.append(1.0 if f.name in missing else 0.0)
        return np.asarray(out, dtype=np.float32)

    def encode_frame(self, frame: Any) -> np.ndarray:
        """A pandas DataFrame to ``float32 [n_rows, n_features]``. An error
        names the row (its index label) as well as the field."""
        rows = []
        for label, row in frame.iterrows():
            try:
                rows.append(self.encode(row))
            except SchemaError as err:
                raise SchemaError(f"row {label}: {err}", err.field) from None
        if not rows:
            return np.zeros((0, self.n_features), dtype=np.float32)
        return np.stack(rows)

    # -- fitting -------------------------------------------------------------
    def fit(self, frame: Any, source: str = "") -> TabularSchema:
        """A copy with normalisation and filling statistics from ``frame``
        (the *training* rows only). Ranges, kinds and rules are kept."""
        missing_cols = [f.name for f in self.fields if f.name not in frame.columns]
        if missing_cols:
            raise SchemaError(f"the table lacks the column(s) {', '.join(missing_cols)}")
        parsed_rows = []
        for label, row in frame.iterrows():
            try:
                parsed_rows.append(self.parse(row))
            except SchemaError as err:
                raise SchemaError(f"row {label}: {err}", err.field) from None
        new_fields = []
        for f in self.fields:
            values = [r[f.name] for r in parsed_rows if r[f.name] is not None]
            if not values:
                raise SchemaError(f"{f.display_name}: no known values to fit on", f.name)
            if f.kind == "category":
                counts = [values.count(c) for c in f.categories]
                new_fields.append(replace(f, fill_value=f.categories[int(np.argmax(counts))]))
            else:
                arr = np.asarray(values, dtype=np.float64)
                std = float(arr.std()) if arr.size > 1 and arr.std() > 0 else 1.0
                mean = float(arr.mean())
                fill_value = mean if f.kind == "number" else float(np.round(mean))
                if f.kind == "binary":
                    mean, std = 0.0, 1.0  # encoded as is
                new_fields.append(replace(f, mean=mean, std=std, fill_value=fill_value))
        joint = [f for f in new_fields if f.is_numeric]
        data = np.array(
            [[np.nan if r[f.name] is None else f.as_number(r[f.name]) for f in joint] for r in parsed_rows],
            dtype=np.float64,
        )
        mu, cov = _pairwise_moments(data)
        return TabularSchema(
            fields=tuple(new_fields),
            joint_mean=tuple(float(v) for v in mu),
            joint_cov=tuple(tuple(float(v) for v in row) for row in cov),
            fitted_on=source or f"{len(parsed_rows)} rows",
        )

    # -- serialisation ---------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {
            "fields": [asdict(f) | {"categories": list(f.categories)} for f in self.fields],
            "joint_mean": list(self.joint_mean),
            "joint_cov": [list(r) for r in self.joint_cov],
            "fitted_on": self.fitted_on,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TabularSchema:
        try:
            fields = tuple(Field(**{**f, "categories": tuple(f.get("categories", ()))}) for f in data["fields"])
        except (KeyError, TypeError) as err:
            raise SchemaError(f"malformed schema: {err}") from None
        n_joint = sum(f.is_numeric for f in fields)
        mean = tuple(data.get("joint_mean", ()))
        cov = tuple(tuple(r) for r in data.get("joint_cov", ()))
        if mean and (len(mean) != n_joint or len(cov) != n_joint or any(len(r) != n_joint for r in cov)):
            raise SchemaError(f"malformed schema: joint statistics do not match {n_joint} numeric fields")
        return cls(fields=fields, joint_mean=mean, joint_cov=cov, fitted_on=data.get("fitted_on", ""))


def _pairwise_moments(data: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and covariance from pairwise-complete rows, projected to the
    nearest positive semi-definite matrix (pairwise estimates need not be)."""
    n_vars = data.shape[1]
    mu = np.nanmean(data, axis=0)
    mu = np.where(np.isfinite(mu), mu, 0.0)
    cov = np.zeros((n_vars, n_vars))
    for i in range(n_vars):
        for j in range(i, n_vars):
            both = ~np.isnan(data[:, i]) & ~np.isnan(data[:, j])
            if both.sum() > 1:
                di, dj = data[both, i] - mu[i], data[both, j] - mu[j]
                cov[i, j] = cov[j, i] = float(np.mean(di * dj))
    eigval, eigvec = np.linalg.eigh(cov)
    cov = (eigvec * np.clip(eigval, 1e-9, None)) @ eigvec.T
    return mu, cov


def adni_schema() -> TabularSchema:
    """The HyperFusion AD task's fields (unfitted: ranges, units and rules).

    Encoded as 16 numbers like the paper: AGE, PTGENDER one-hot (2),
    PTEDUCAT, then APOE4, ABETA, TAU, PTAU, FDG, AV45 each with a
    missing-value indicator. Call :meth:`TabularSchema.fit` on training rows.
    """
    sex_aliases = {"F": "Female", "M": "Male", "woman": "Female", "man": "Male"}
    cond = {"fill": "conditional", "missing_indicator": True}
    return TabularSchema(
        fields=(
            Field("AGE", "number", "Age", "years", 18, 110, fill="required"),
            Field("PTGENDER", "category", "Sex", categories=("Female", "Male"), aliases=sex_aliases, fill="required"),
            Field("PTEDUCAT", "number", "Education", "years", 0, 30, integer=True, fill="mean"),
            Field("APOE4", "number", "APOE e4 alleles", "alleles", 0, 2, integer=True, **cond),
            Field("ABETA", "number", "CSF Abeta42", "pg/ml", 100, 5000, **cond),
            Field("TAU", "number", "CSF total tau", "pg/ml", 50, 2000, **cond),
            Field("PTAU", "number", "CSF p-tau181", "pg/ml", 5, 200, **cond),
            Field("FDG", "number", "FDG-PET", "SUVR", 0.5, 2.0, **cond),
            Field("AV45", "number", "Amyloid PET (AV45)", "SUVR", 0.6, 2.5, **cond),
        )
    )


def brain_age_schema() -> TabularSchema:
    """The brain-age task's single field: sex, one-hot (2 numbers)."""
    return TabularSchema(
        fields=(
            Field(
                "PTGENDER",
                "category",
                "Sex",
                categories=("Female", "Male"),
                aliases={"F": "Female", "M": "Male", "female": "Female", "male": "Male"},
                fill="required",
            ),
        )
    )
