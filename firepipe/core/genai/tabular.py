"""Generic tabular synthetic data: the reference's `custom` schema, seeded generation, writers.

Every value is synthetic: drawn from a seeded numpy Generator, never copied from or derived from
any real record. Personal-looking types are made obviously fictitious: emails use the reserved
domains example.com/.org/.net (RFC 2606), phone numbers the 555-0100..555-0199 block set aside
for fiction, addresses fictitious street and town names. No real personal data is involved.

Constraints, per type (anything else is refused with a ValueError naming the field):
- `min`/`max`: integer and float (numbers, or numeric text), date and datetime (ISO text such as
  "2024-01-31" / "2024-01-31T08:00:00"; an aware datetime is taken in UTC). Defaults: integer
  0..1,000,000, float 0..1, dates 2020-01-01..2025-12-31; one bound alone keeps that width.
- `format`: date/datetime take a strftime format (the column is then text, e.g. "%d/%m/%Y"; it
  must keep the full value, to the day or the second); phone a pattern with exactly ten `#`
  digits (default "###-###-####", filled as NXX-555-01XX); string a pattern where `#` is a digit
  and `?` an upper-case letter, everything else literal (e.g. "CUST-#####"; without one, eight
  lower-case letters). Other types take no format.
- `nullable`: exactly round(5% of rows) nulls at random positions (`NULL_SHARE`); none otherwise.
- `unique`: the non-null values are distinct; a domain smaller than the rows is a ValueError.
"""

from __future__ import annotations

import math
import os
import uuid
from collections.abc import Callable
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
from numpy.typing import NDArray
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

FIELD_TYPES = (
    "string",
    "integer",
    "float",
    "date",
    "datetime",
    "email",
    "phone",
    "address",
    "uuid",
    "boolean",
)
BOUNDED_TYPES = ("integer", "float", "date", "datetime")
FORMATTED_TYPES = ("string", "phone", "date", "datetime")
OUTPUT_FORMATS = ("parquet", "csv", "json")
MAX_INLINE_ROWS = 1_000  # rows an answer carries inline (through Bedrock's small payloads too)
NULL_SHARE = 0.05
DEFAULT_PHONE_FORMAT = "###-###-####"
DEFAULT_DATE_RANGE = (date(2020, 1, 1), date(2025, 12, 31))
_INT_WIDTH = 1_000_000
_MAX_PLACEHOLDERS = 18  # 10**18 < 2**63: a pattern's domain still fits an int64 index

_WORDS = (
    *("amber", "birch", "cedar", "delta", "ember", "fjord", "garnet", "harbor"),
    *("indigo", "juniper", "kestrel", "lumen", "maple", "nimbus", "onyx", "pebble"),
)
_EMAIL_DOMAINS = ("example.com", "example.org", "example.net")
_STREETS = (
    *("Imaginary", "Placeholder", "Nowhere", "Sample", "Fictional", "Dummy", "Pretend"),
    *("Makebelieve", "Notreal", "Testing", "Mockup", "Fable", "Invented", "Story", "Phantom"),
    "Mirage",
)
_SUFFIXES = ("Street", "Avenue", "Lane", "Road", "Way", "Court")
_TOWNS = ("Exampleville", "Sampleton", "Testburg", "Fictionford")


class FieldConstraints(BaseModel):
    """Optional constraints on one field; what each type accepts is in the module docstring."""

    model_config = ConfigDict(extra="forbid")
    min: int | float | str | None = Field(
        default=None,
        description="Lower bound: a number (integer, float) or ISO text (date, datetime).",
    )
    max: int | float | str | None = Field(
        default=None,
        description="Upper bound: a number (integer, float) or ISO text (date, datetime).",
    )
    format: str | None = Field(
        default=None,
        description="strftime format (date, datetime), '#'-digit pattern with ten digits "
        "(phone, e.g. '###-###-####'), or '#'-digit/'?'-letter pattern (string, e.g. 'ID-####').",
    )
    nullable: bool = Field(default=False, description="When true, about 5% of the values are null.")
    unique: bool = Field(default=False, description="When true, all non-null values are distinct.")


class FieldSpec(BaseModel):
    """One column of the table to generate."""

    model_config = ConfigDict(extra="forbid")
    name: str = Field(..., min_length=1, description="Column name, unique within the schema.")
    type: str = Field(
        ...,
        description="Value type, one of: string, integer, float, date, datetime, email, phone, "
        "address, uuid, boolean.",
    )
    constraints: FieldConstraints = Field(
        default_factory=lambda: FieldConstraints(),
        description="Optional constraints on the values.",
    )

    @field_validator("type")
    @classmethod
    def _known_type(cls, value: str) -> str:
        kind = value.strip().lower()
        if kind not in FIELD_TYPES:
            raise ValueError(f"unknown type {value!r}; allowed: {', '.join(FIELD_TYPES)}")
        return kind


class TabularSchema(BaseModel):
    """The columns of a generic table (the reference design's `custom` data type)."""

    model_config = ConfigDict(extra="forbid")
    fields: list[FieldSpec] = Field(..., min_length=1, description="The columns, in order.")

    @model_validator(mode="after")
    def _distinct_names(self) -> TabularSchema:
        names = [f.name for f in self.fields]
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise ValueError(f"duplicate field names: {', '.join(repeated)}")
        return self


def number_bound(value: object, field: str, which: str) -> float:
    """A numeric bound from a number or numeric text (Bedrock sends numbers as text)."""
    if isinstance(value, bool):
        raise ValueError(f"field {field!r}: {which} must be a number, not {value!r}")
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError, OverflowError):  # OverflowError: an int beyond float's range
        number = math.nan
    if not math.isfinite(number):
        raise ValueError(f"field {field!r}: {which} must be a finite number, got {value!r}")
    return number


def datetime_bound(value: object, field: str, which: str) -> datetime:
    """A date/datetime bound from ISO text; aware values become naive UTC."""
    try:
        moment = datetime.fromisoformat(str(value)) if isinstance(value, str) else None
    except ValueError:
        moment = None
    if moment is None:
        raise ValueError(
            f"field {field!r}: {which} must be ISO text like 2024-01-31, got {value!r}"
        )
    return moment.astimezone(UTC).replace(tzinfo=None) if moment.tzinfo else moment


def _fill_range(lo: Any, hi: Any, default: tuple[Any, Any], width: Any) -> tuple[Any, Any]:
    """Defaults for missing bounds: the default range, or its width from the one bound given."""
    if lo is None and hi is None:
        return default
    return (hi - width if lo is None else lo), (lo + width if hi is None else hi)


def bounds(spec: FieldSpec) -> tuple[Any, Any]:
    """The field's (low, high), defaults filled in; ValueError on a type without bounds."""
    c, kind, name = spec.constraints, spec.type, spec.name
    if kind not in BOUNDED_TYPES:
        if c.min is not None or c.max is not None:
            raise ValueError(f"field {name!r}: type {kind} takes no min/max")
        return None, None
    lo: Any
    hi: Any
    if kind in ("integer", "float"):
        lo = None if c.min is None else number_bound(c.min, name, "min")
        hi = None if c.max is None else number_bound(c.max, name, "max")
        if kind == "integer" and any(v is not None and not v.is_integer() for v in (lo, hi)):
            raise ValueError(f"field {name!r}: integer bounds must be whole numbers")
        width = float(_INT_WIDTH) if kind == "integer" else 1.0
        lo, hi = _fill_range(lo, hi, (0.0, width), width)
    else:
        lo = None if c.min is None else datetime_bound(c.min, name, "min")
        hi = None if c.max is None else datetime_bound(c.max, name, "max")
        first, last = (datetime.combine(d, datetime.min.time()) for d in DEFAULT_DATE_RANGE)
        lo, hi = _fill_range(lo, hi, (first, last), last - first)
    if lo > hi:
        raise ValueError(f"field {name!r}: min {c.min!r} is greater than max {c.max!r}")
    if kind == "integer":
        if int(hi) - int(lo) >= 2**62:  # the domain index must fit numpy's int64 draws
            raise ValueError(f"field {name!r}: integer range {lo:.0f}..{hi:.0f} is too wide")
        return int(lo), int(hi)
    if kind == "date":
        return lo.date(), hi.date()
    return lo, hi


def pattern_radices(pattern: str, field: str) -> list[int]:
    """The radix of each placeholder of a string/phone pattern (`#` 10, `?` 26)."""
    radices = [10 if ch == "#" else 26 for ch in pattern if ch in "#?"]
    if not radices or len(radices) > _MAX_PLACEHOLDERS:
        raise ValueError(
            f"field {field!r}: format {pattern!r} needs 1 to {_MAX_PLACEHOLDERS} placeholders "
            "('#' digit, '?' letter)"
        )
    return radices


def check_format(spec: FieldSpec) -> None:
    """Raise a ValueError when the field's format cannot be honoured."""
    fmt, kind, name = spec.constraints.format, spec.type, spec.name
    if fmt is None:
        return
    if kind not in FORMATTED_TYPES:
        raise ValueError(f"field {name!r}: type {kind} takes no format (got {fmt!r})")
    if kind == "string":
        pattern_radices(fmt, name)
    elif kind == "phone":
        if fmt.count("#") != 10 or "?" in fmt:
            raise ValueError(f"field {name!r}: phone format {fmt!r} needs exactly ten '#' digits")
    else:
        # A format that drops part of the value (no day, no seconds) could not be checked
        # against min/max or parsed back, so only a lossless one is honoured.
        sample = datetime(2023, 11, 27, 13, 45, 59)
        sample = sample if kind == "datetime" else datetime(2023, 11, 27)
        try:
            ok = "%" in fmt and datetime.strptime(sample.strftime(fmt), fmt) == sample
        except ValueError:
            ok = False
        if not ok:
            raise ValueError(
                f"field {name!r}: {kind} format {fmt!r} is not a strftime format that keeps the "
                f"full {'date' if kind == 'date' else 'date and time to the second'}"
            )


def domain_size(spec: FieldSpec) -> int | None:
    """How many distinct values the field can take (None: practically unlimited)."""
    lo, hi = bounds(spec)
    kind, fmt = spec.type, spec.constraints.format
    if kind == "integer":
        return int(hi) - int(lo) + 1
    if kind == "date":
        return int((hi - lo).days) + 1
    if kind == "datetime":
        return int((hi - lo).total_seconds()) + 1
    if kind == "string":
        return math.prod(pattern_radices(fmt, spec.name)) if fmt else 26**8
    sizes = {
        "boolean": 2,
        "phone": 800 * 100,
        "email": len(_WORDS) * 10_000 * len(_EMAIL_DOMAINS),
        "address": 9_999 * len(_STREETS) * len(_SUFFIXES) * len(_TOWNS),
    }
    return sizes.get(kind)  # float, uuid: None, continuous


def _decode(index: NDArray[np.int64], radices: list[int]) -> list[NDArray[np.int64]]:
    """Mixed-radix digits of each index, most significant first."""
    out = []
    for radix in reversed(radices):
        out.append(index % radix)
        index = index // radix
    return out[::-1]


def _fill(pattern: str, digits: list[NDArray[np.int64]]) -> list[str]:
    alphabet = "0123456789"
    parts: list[list[str]] = []
    it = iter(digits)
    for ch in pattern:
        if ch in "#?":
            chars = alphabet if ch == "#" else "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
            parts.append([chars[d] for d in next(it)])
        else:
            parts.append([ch] * len(digits[0]))
    return ["".join(row) for row in zip(*parts, strict=True)]


def _from_index(spec: FieldSpec, idx: NDArray[np.int64]) -> pl.Series:
    """Map domain indices to the field's values (one-to-one, so distinct indices stay distinct)."""
    kind, fmt = spec.type, spec.constraints.format
    lo, _ = bounds(spec)
    if kind == "integer":
        return pl.Series(spec.name, idx + lo, dtype=pl.Int64)
    if kind in ("date", "datetime"):
        unit = "D" if kind == "date" else "s"
        stamps = (np.datetime64(lo).astype(f"datetime64[{unit}]") + idx).astype("datetime64[us]")
        values = pl.Series(spec.name, stamps).cast(pl.Date if kind == "date" else pl.Datetime("us"))
        if fmt:
            return pl.Series(spec.name, [v.strftime(fmt) for v in values.to_list()], pl.String)
        return values
    if kind == "boolean":
        return pl.Series(spec.name, idx == 1, dtype=pl.Boolean)
    if kind == "string":
        text = _fill(fmt, _decode(idx, pattern_radices(fmt, spec.name))) if fmt else None
        if text is None:
            text = [
                "".join(chr(97 + d) for d in row)
                for row in zip(*_decode(idx, [26] * 8), strict=True)
            ]
    elif kind == "phone":
        # NXX-555-01XX: the 555-0100..0199 block is reserved for fictional numbers.
        npa, line = _decode(idx, [800, 100])
        npa, line = npa + 200, line + 100
        fixed = [np.full_like(idx, d) for d in (5, 5, 5)]
        digits = [npa // 100, npa // 10 % 10, npa % 10, *fixed, line // 1000, line // 100 % 10]
        text = _fill(fmt or DEFAULT_PHONE_FORMAT, [*digits, line // 10 % 10, line % 10])
    elif kind == "email":
        w, n, d = _decode(idx, [len(_WORDS), 10_000, len(_EMAIL_DOMAINS)])
        text = [f"{_WORDS[a]}.{b:04d}@{_EMAIL_DOMAINS[c]}" for a, b, c in zip(w, n, d, strict=True)]
    else:  # address
        n, s, x, t = _decode(idx, [9_999, len(_STREETS), len(_SUFFIXES), len(_TOWNS)])
        text = [
            f"{a + 1} {_STREETS[b]} {_SUFFIXES[c]}, {_TOWNS[e]}"
            for a, b, c, e in zip(n, s, x, t, strict=True)
        ]
    return pl.Series(spec.name, text, dtype=pl.String)


def _continuous(spec: FieldSpec, rng: np.random.Generator, count: int) -> pl.Series:
    """Float or uuid values; unique ones are redrawn until distinct (collisions are rare)."""
    lo, hi = bounds(spec)
    draw: Callable[[int], list[Any]]
    if spec.type == "float":
        if spec.constraints.unique and lo == hi and count > 1:
            raise ValueError(f"field {spec.name!r}: min == max leaves one value for {count} rows")
        draw = lambda n: rng.uniform(lo, hi, n).tolist()  # noqa: E731
    else:
        draw = lambda n: [  # noqa: E731
            str(uuid.UUID(bytes=bytes(b), version=4))
            for b in rng.integers(0, 256, (n, 16), np.uint8)
        ]
    values = draw(count)
    while spec.constraints.unique and len(set(values)) < len(values):
        values = list(dict.fromkeys(values))  # drop repeats, keep the order (so the seed's)
        values += draw(count - len(values))
    return pl.Series(spec.name, values, dtype=pl.Float64 if spec.type == "float" else pl.String)


def generate_field(spec: FieldSpec, rows: int, rng: np.random.Generator) -> pl.Series:
    """One column of `rows` values honouring the field's constraints."""
    check_format(spec)
    c = spec.constraints
    nulls = round(rows * NULL_SHARE) if c.nullable else 0
    count = rows - nulls
    size = domain_size(spec)
    if size is None:
        values = _continuous(spec, rng, count)
    else:
        if c.unique and count > size:
            raise ValueError(
                f"field {spec.name!r}: only {size} distinct {spec.type} values fit its "
                f"constraints, but {count} unique values are needed"
            )
        idx = rng.choice(size, count, replace=False) if c.unique else rng.integers(0, size, count)
        values = _from_index(spec, np.asarray(idx, dtype=np.int64))
    if not nulls:
        return values
    keep = np.sort(rng.choice(rows, count, replace=False))
    return pl.Series(spec.name, [None] * rows, dtype=values.dtype).scatter(keep, values)


def generate(schema: TabularSchema, rows: int, seed: int) -> pl.DataFrame:
    """A frame of `rows` synthetic rows; the same seed gives the same frame.

    Each field draws from its own stream (seed, position), so appending a field leaves the
    others' values unchanged.
    """
    if rows < 0 or seed < 0:
        raise ValueError(f"rows and seed must be >= 0, got rows={rows}, seed={seed}")
    columns = [
        generate_field(spec, rows, np.random.default_rng([seed, i]))
        for i, spec in enumerate(schema.fields)
    ]
    return pl.DataFrame(columns)


def write(frame: pl.DataFrame, output_format: str, path: Path) -> Path:
    """Write the frame as parquet, csv or json (JSON lines: one object per row); return the path.

    The file appears whole or not at all: it is written beside its path and then renamed, so a
    crash mid-write leaves no partial file under the name."""
    kind = output_format.strip().lower()
    if kind not in OUTPUT_FORMATS:
        raise ValueError(
            f"unknown output format {output_format!r}; allowed: {', '.join(OUTPUT_FORMATS)}"
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f"{path.name}.partial")
    try:
        if kind == "parquet":
            frame.write_parquet(partial)
        elif kind == "csv":
            frame.write_csv(partial)
        else:
            frame.write_ndjson(partial)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    os.replace(partial, path)
    return path
