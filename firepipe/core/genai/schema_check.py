"""validateSchema: a tabular schema's mistakes, suggestions and compliance notes, as an answer.

A schema with mistakes gives `valid=False` with one error per problem, never an exception, so it
works on raw request dicts that the pydantic models would refuse. Compliance frameworks (GDPR,
HIPAA, PCI-DSS, case-insensitive) flag fields that would hold personal, health or card data in a
real table, and say what generation does about it; they never make a schema invalid.
"""

from __future__ import annotations

import difflib
import re
from typing import Any

from pydantic import BaseModel, Field, ValidationError

from firepipe.core.genai.tabular import (
    FIELD_TYPES,
    FieldConstraints,
    FieldSpec,
    TabularSchema,
    bounds,
    check_format,
    domain_size,
)

SYNTHETIC = (
    "Values are synthetic: drawn from a seeded random generator, copied from no real record."
)
_SMALL_DOMAIN = 1_000  # below this many distinct values a unique field is worth a warning


class SchemaError(BaseModel):
    field: str = Field(..., description="The field's name (or its position), or 'schema'.")
    message: str = Field(..., description="What is wrong, in words.")
    severity: str = Field(..., description="'error' (cannot generate) or 'warning'.")


class ComplianceIssue(BaseModel):
    field: str = Field(..., description="The field that would hold regulated data.")
    framework: str = Field(..., description="GDPR, HIPAA or PCI-DSS.")
    category: str = Field(..., description="What kind of data the field holds in a real table.")
    handling: str = Field(..., description="What generation does about it.")


class SchemaCheck(BaseModel):
    valid: bool = Field(..., description="True when no error (warnings allowed).")
    errors: list[SchemaError] = Field(default_factory=list, description="Errors and warnings.")
    suggestions: list[str] = Field(default_factory=list, description="Improvements to consider.")
    compliance_issues: list[ComplianceIssue] = Field(
        default_factory=list, description="Fields regulated under the requested frameworks."
    )


_TYPE_HANDLING = {
    "email": "addresses use only the reserved domains example.com/.org/.net (RFC 2606)",
    "phone": "numbers use only the 555-0100..555-0199 block reserved for fiction",
    "address": "addresses use fictitious street and town names",
}
# (framework, category, name pattern): a name match flags the field whatever its type.
_PERSON_NAME = (
    r"^((first|last|full|sur|given|family|middle|maiden|patient|customer|person|user|contact)_?)?"
    r"name$"
)
_NAME_RULES = [
    ("GDPR", "personal name", _PERSON_NAME),
    ("GDPR", "date of birth", r"dob|birth"),
    ("GDPR", "national identifier", r"ssn|social_security|national_id|passport|tax_id"),
    ("GDPR", "online identifier", r"ip_address|device_id|cookie"),
    ("HIPAA", "patient identifier", r"patient|mrn|medical_record|health_plan|beneficiary"),
    ("HIPAA", "health information", r"diagnos|(^|_)icd|prescription|medication|treatment"),
    ("HIPAA", "personal name", _PERSON_NAME),
    ("HIPAA", "date of birth", r"dob|birth"),
    ("HIPAA", "national identifier", r"ssn|social_security"),
    ("PCI-DSS", "primary account number", r"card_?num|(^|_)pan($|_)|credit_?card|account_?num"),
    ("PCI-DSS", "card security code", r"cvv|cvc|(^|_)cid$|security_code"),
    ("PCI-DSS", "card expiry", r"expir|exp_date"),
    ("PCI-DSS", "cardholder name", r"cardholder|card_holder"),
]
_TYPE_RULES = {"GDPR": ("email", "phone", "address"), "HIPAA": ("email", "phone", "address")}
_PCI_NOTE = (
    " Card-like digits are random, issued by no card scheme; about one in ten random digit "
    "strings passes a Luhn check, so do not count on it failing."
)


def validate_schema(
    schema: TabularSchema | dict[str, Any],
    compliance_requirements: list[str] | None = None,
    rows: int | None = None,
) -> SchemaCheck:
    """Check a schema (model or raw dict); `rows`, when known, checks unique fields' domains."""
    raw = schema.model_dump() if isinstance(schema, TabularSchema) else schema
    errors: list[SchemaError] = []
    suggestions: list[str] = []
    specs: list[FieldSpec] = []
    fields = raw.get("fields") if isinstance(raw, dict) else None
    if not isinstance(fields, list) or not fields:
        errors.append(
            SchemaError(
                field="schema", message="'fields' must be a non-empty list", severity="error"
            )
        )
        fields = []
    seen: set[str] = set()
    for pos, item in enumerate(fields):
        spec = _check_field(pos, item, seen, errors, suggestions)
        if spec is not None:
            specs.append(spec)
            _check_constraints(spec, rows, errors, suggestions)
    frameworks = _frameworks(compliance_requirements or [], errors)
    issues = [issue for spec in specs for issue in _compliance(spec, frameworks)]
    valid = not any(e.severity == "error" for e in errors)
    return SchemaCheck(
        valid=valid, errors=errors, suggestions=suggestions, compliance_issues=issues
    )


def _check_field(
    pos: int, item: object, seen: set[str], errors: list[SchemaError], suggestions: list[str]
) -> FieldSpec | None:
    """The field as a FieldSpec, or None after recording why it is not one."""

    def fail(field: str, message: str) -> None:
        errors.append(SchemaError(field=field, message=message, severity="error"))

    if not isinstance(item, dict):
        fail(f"fields[{pos}]", "a field must be an object with name, type and constraints")
        return None
    name = item.get("name")
    label = name if isinstance(name, str) and name.strip() else f"fields[{pos}]"
    if not isinstance(name, str) or not name.strip():
        fail(label, "the field has no name")
    elif name in seen:
        fail(label, f"duplicate field name {name!r}")
    else:
        seen.add(name)
    kind = item.get("type")
    if not isinstance(kind, str) or kind.strip().lower() not in FIELD_TYPES:
        close = difflib.get_close_matches(str(kind).lower(), FIELD_TYPES, n=1, cutoff=0.5)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        fail(label, f"unknown type {kind!r} (allowed: {', '.join(FIELD_TYPES)}){hint}")
        if close:
            suggestions.append(f"change the type of {label!r} to {close[0]!r}")
    extra = sorted(set(item) - {"name", "type", "constraints"})
    if extra:
        fail(label, f"unknown keys {extra}: a field has name, type and constraints")
    try:
        constraints = FieldConstraints.model_validate(item.get("constraints") or {})
    except ValidationError as exc:
        for err in exc.errors():
            where = ".".join(str(p) for p in err["loc"])
            fail(label, f"constraints.{where}: {err['msg']}")
        return None
    if any(e.field == label for e in errors):
        return None
    return FieldSpec(name=name, type=kind, constraints=constraints)  # type: ignore[arg-type]


def _check_constraints(
    spec: FieldSpec, rows: int | None, errors: list[SchemaError], suggestions: list[str]
) -> None:
    """Bounds, format and unique-domain problems of a well-formed field."""
    problems = []
    for check in (bounds, check_format):
        try:
            check(spec)
        except ValueError as exc:
            problems.append(str(exc))
    errors.extend(SchemaError(field=spec.name, message=p, severity="error") for p in problems)
    if problems:
        return
    c = spec.constraints
    size = domain_size(spec)
    if c.unique and size is not None and rows is not None and rows > size:
        errors.append(
            SchemaError(
                field=spec.name,
                severity="error",
                message=f"unique, but only {size} distinct values fit for {rows} rows",
            )
        )
    elif c.unique and size is not None and size < _SMALL_DOMAIN:
        errors.append(
            SchemaError(
                field=spec.name, severity="warning", message=f"unique allows at most {size} rows"
            )
        )
    if re.search(r"(^|_)id$", spec.name.lower()) and not c.unique:
        suggestions.append(f"mark {spec.name!r} unique: it looks like an identifier")
    if c.unique and c.nullable:
        suggestions.append(f"{spec.name!r} is unique and nullable: nulls are not counted as values")
    if spec.type in ("integer", "float", "date", "datetime") and c.min is None and c.max is None:
        lo, hi = bounds(spec)
        suggestions.append(f"give {spec.name!r} min and max; the default range is {lo} to {hi}")


def _frameworks(requested: list[str], errors: list[SchemaError]) -> list[str]:
    known = {
        "GDPR": "GDPR",
        "HIPAA": "HIPAA",
        "PCI-DSS": "PCI-DSS",
        "PCI_DSS": "PCI-DSS",
        "PCI": "PCI-DSS",
    }
    out = []
    for name in requested:
        key = str(name).strip().upper()
        if key in known:
            out.append(known[key])
        else:
            errors.append(
                SchemaError(
                    field="compliance_requirements",
                    severity="warning",
                    message=f"unknown framework {name!r}; known: GDPR, HIPAA, PCI-DSS",
                )
            )
    return list(dict.fromkeys(out))


def _compliance(spec: FieldSpec, frameworks: list[str]) -> list[ComplianceIssue]:
    """One issue per (framework, category) the field falls under."""
    name = spec.name.strip().lower().replace("-", "_").replace(" ", "_")
    found: dict[tuple[str, str], str] = {}
    for fw in frameworks:
        if spec.type in _TYPE_RULES.get(fw, ()):
            found[(fw, f"contact data ({spec.type})")] = f"{SYNTHETIC} {_TYPE_HANDLING[spec.type]}."
        for rule_fw, category, pattern in _NAME_RULES:
            if rule_fw == fw and re.search(pattern, name):
                note = _PCI_NOTE if fw == "PCI-DSS" else ""
                found[(fw, category)] = f"{SYNTHETIC} {_value_note(spec)}.{note}"
    return [
        ComplianceIssue(field=spec.name, framework=fw, category=cat, handling=text)
        for (fw, cat), text in found.items()
    ]


def _value_note(spec: FieldSpec) -> str:
    if spec.type in _TYPE_HANDLING:
        return _TYPE_HANDLING[spec.type]
    if spec.type in ("date", "datetime"):
        return "dates are drawn at random within the field's range, belonging to nobody"
    if spec.type == "string":
        return "text is random letters or the field's pattern, naming no real person"
    return f"{spec.type} values are random within the field's constraints"
