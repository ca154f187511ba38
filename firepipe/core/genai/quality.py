"""calculateQualityMetrics for a generic table: completeness, validity, uniqueness, distributions.

- completeness: share of non-null values, per field and over all cells.
- validity: share of values meeting the field's type, bounds and format; a null is valid only in
  a nullable field (so a non-nullable field's nulls count against it). Overall: over all cells.
- uniqueness: distinct non-null values / non-null values per field (1.0 for an all-null field).
- distributions: numbers min/max/mean/std/quantiles, dates min/max (ISO text), everything else
  the distinct count and the five most frequent values.
Every value is a plain int, float, str or None, so the answer serialises to JSON as is.
"""

from __future__ import annotations

import re
import uuid
from datetime import date, datetime
from typing import Any

import polars as pl

from firepipe.core.genai.tabular import (
    DEFAULT_PHONE_FORMAT,
    FieldSpec,
    TabularSchema,
    datetime_bound,
    number_bound,
)

_EMAIL = re.compile(r"[^@\s]+@[^@\s]+\.[A-Za-z]{2,}")
_TOP = 5


def quality_metrics(frame: pl.DataFrame, schema: TabularSchema | dict[str, Any]) -> dict[str, Any]:
    """The metrics of `frame` against `schema` (see the module docstring)."""
    model = schema if isinstance(schema, TabularSchema) else TabularSchema.model_validate(schema)
    missing = [f.name for f in model.fields if f.name not in frame.columns]
    if missing:
        raise ValueError(f"the frame lacks the schema's fields: {', '.join(missing)}")
    rows = frame.height
    complete: dict[str, float] = {}
    valid: dict[str, float] = {}
    unique: dict[str, float] = {}
    dists: dict[str, dict[str, Any]] = {}
    non_null_total = valid_total = 0
    for spec in model.fields:
        column = frame[spec.name]
        present = column.drop_nulls()
        good = sum(_is_valid(v, spec) for v in present.to_list())
        good += column.null_count() if spec.constraints.nullable else 0
        non_null_total += present.len()
        valid_total += good
        complete[spec.name] = _share(present.len(), rows)
        valid[spec.name] = _share(good, rows)
        unique[spec.name] = _share(present.n_unique(), present.len())
        dists[spec.name] = _distribution(present, spec)
    cells = rows * len(model.fields)
    return {
        "rows": rows,
        "completeness": {"overall": _share(non_null_total, cells), "fields": complete},
        "validity": {"overall": _share(valid_total, cells), "fields": valid},
        "uniqueness": {"fields": unique},
        "distributions": dists,
    }


def _share(part: int, whole: int) -> float:
    return 1.0 if whole == 0 else part / whole


def _pattern(fmt: str) -> re.Pattern[str]:
    parts = {"#": r"\d", "?": "[A-Z]"}
    return re.compile("".join(parts.get(ch, re.escape(ch)) for ch in fmt))


def _as_moment(value: object, spec: FieldSpec) -> datetime | None:
    """A date/datetime value (native, or text in the field's format or ISO) as a datetime."""
    if isinstance(value, datetime):
        return value
    if isinstance(value, date):
        return datetime.combine(value, datetime.min.time())
    if not isinstance(value, str):
        return None
    fmt = spec.constraints.format
    try:
        return datetime.strptime(value, fmt) if fmt else datetime.fromisoformat(value)
    except ValueError:
        return None


def _in_bounds(value: Any, low: Any, high: Any) -> bool:
    return (low is None or value >= low) and (high is None or value <= high)


def _is_valid(value: object, spec: FieldSpec) -> bool:
    """Whether one non-null value meets the field's type and constraints."""
    kind, c = spec.type, spec.constraints
    if kind in ("integer", "float"):
        if isinstance(value, bool) or not isinstance(value, int | float):
            return False
        if kind == "integer" and not float(value).is_integer():
            return False
        lo = None if c.min is None else number_bound(c.min, spec.name, "min")
        hi = None if c.max is None else number_bound(c.max, spec.name, "max")
        return value == value and _in_bounds(value, lo, hi)  # NaN is never valid
    if kind in ("date", "datetime"):
        moment = _as_moment(value, spec)
        if moment is None:
            return False
        first = None if c.min is None else datetime_bound(c.min, spec.name, "min")
        last = None if c.max is None else datetime_bound(c.max, spec.name, "max")
        if kind == "date":  # bounds compare by day, whatever time of day they were given at
            first, last = (
                None if b is None else datetime(b.year, b.month, b.day) for b in (first, last)
            )
        return _in_bounds(moment, first, last)
    if kind == "boolean":
        return isinstance(value, bool)
    if not isinstance(value, str):
        return False
    if kind == "string":
        return c.format is None or _pattern(c.format).fullmatch(value) is not None
    if kind == "phone":
        return _pattern(c.format or DEFAULT_PHONE_FORMAT).fullmatch(value) is not None
    if kind == "email":
        return _EMAIL.fullmatch(value) is not None
    if kind == "uuid":
        try:
            return str(uuid.UUID(value)) == value.lower()
        except ValueError:
            return False
    return bool(value.strip())  # address: any non-blank text


def _distribution(present: pl.Series, spec: FieldSpec) -> dict[str, Any]:
    """Summary of a field's non-null values."""
    if spec.type in ("integer", "float") and present.dtype.is_numeric():
        values = present.cast(pl.Float64)
        quantiles = {
            f"p{int(q * 100):02d}": _num(values.quantile(q, "linear"))
            for q in (0.05, 0.25, 0.5, 0.75, 0.95)
        }
        return {
            "min": _num(values.min()),
            "max": _num(values.max()),
            "mean": _num(values.mean()),
            "std": _num(values.std()),
            "quantiles": quantiles,
        }
    if spec.type in ("date", "datetime"):
        moments = [m for m in (_as_moment(v, spec) for v in present.to_list()) if m is not None]
        as_text = (lambda m: m.date().isoformat()) if spec.type == "date" else datetime.isoformat
        return {
            "min": as_text(min(moments)) if moments else None,
            "max": as_text(max(moments)) if moments else None,
        }
    name = present.name
    # Ties sorted by value, so the same frame always lists the same top values.
    counts = present.cast(pl.String).value_counts()
    counts = counts.sort(["count", name], descending=[True, False]).head(_TOP)
    top = [{"value": str(r[name]), "count": int(r["count"])} for r in counts.iter_rows(named=True)]
    return {"distinct": int(present.n_unique()), "top": top}


def _num(value: object) -> float | None:
    return float(value) if isinstance(value, int | float) else None
