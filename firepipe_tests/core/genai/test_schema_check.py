"""validateSchema answers on raw dicts: errors per field, suggestions, compliance issues."""

from __future__ import annotations

from typing import Any

import pytest

from firepipe.core.genai.schema_check import validate_schema


def _field(name: str, kind: str, **constraints: Any) -> dict[str, Any]:
    return {"name": name, "type": kind, "constraints": constraints}


def _errors(fields: list[Any], rows: int | None = None) -> list[tuple[str, str, str]]:
    check = validate_schema({"fields": fields}, [], rows=rows)
    return [(e.field, e.severity, e.message) for e in check.errors]


def test_good_schema_is_valid() -> None:
    check = validate_schema(
        {
            "fields": [
                _field("id", "integer", min=1, max=10_000, unique=True),
                _field("when", "date", min="2024-01-01", max="2024-12-31"),
            ]
        },
        ["GDPR"],
        rows=500,
    )
    assert check.valid
    assert check.errors == []
    assert check.compliance_issues == []


@pytest.mark.parametrize(
    ("field", "message"),
    [
        (_field("n", "integr"), "did you mean 'integer'"),
        (_field("n", "integer", min=9, max=3), "greater than max"),
        (_field("n", "integer", max=10**400), "finite number"),
        (_field("n", "float", min=float("nan")), "finite number"),
        (_field("n", "float", max="inf"), "finite number"),
        (_field("n", "boolean", min=0), "takes no min/max"),
        (_field("n", "uuid", max=3), "takes no min/max"),
        (_field("n", "date", min="31.12.2024"), "ISO text"),
        (_field("n", "phone", format="##-##"), "ten '#'"),
        (_field("n", "uuid", format="x"), "takes no format"),
        (_field("n", "integer", nullable="maybe"), "constraints.nullable"),
        ({"name": "n", "type": "integer", "size": 3}, "unknown keys"),
    ],
)
def test_each_mistake_is_an_error(field: dict[str, Any], message: str) -> None:
    (name, severity, text), *_ = _errors([field])
    assert (name, severity) == ("n", "error")
    assert message in text


def test_unknown_type_suggests_closest() -> None:
    check = validate_schema({"fields": [_field("when", "datetme")]}, [])
    assert not check.valid
    assert "change the type of 'when' to 'datetime'" in check.suggestions


def test_names_empty_and_duplicate() -> None:
    found = _errors([_field("", "uuid"), _field("a", "uuid"), _field("a", "email")])
    assert found[0][:2] == ("fields[0]", "error")
    assert "no name" in found[0][2]
    assert found[1] == ("a", "error", "duplicate field name 'a'")
    assert len(found) == 2


def test_not_a_schema() -> None:
    assert _errors([]) == [("schema", "error", "'fields' must be a non-empty list")]
    assert validate_schema({"colums": []}, []).valid is False
    assert _errors(["id"])[0][0] == "fields[0]"


def test_unique_domain_error_with_rows_warning_without() -> None:
    flag = _field("flag", "boolean", unique=True)
    assert _errors([flag], rows=3) == [
        ("flag", "error", "unique, but only 2 distinct values fit for 3 rows")
    ]
    assert _errors([flag], rows=2) == [("flag", "warning", "unique allows at most 2 rows")]
    check = validate_schema({"fields": [flag]}, [])
    assert check.valid  # a warning only


def test_suggestions_are_specific() -> None:
    check = validate_schema(
        {"fields": [_field("customer_id", "integer", nullable=True, unique=False)]}, []
    )
    assert "mark 'customer_id' unique: it looks like an identifier" in check.suggestions
    assert any(
        s.startswith("give 'customer_id' min and max; the default range is 0 to 1000000")
        for s in check.suggestions
    )


def test_compliance_by_type_and_name() -> None:
    fields = [
        _field("email", "email"),
        _field("first_name", "string"),
        _field("company_name", "string"),
        _field("dob", "date"),
        _field("diagnosis_code", "string", format="?##"),
        _field("card_number", "string", format="################"),
        _field("cvv", "string", format="###"),
        _field("amount", "float"),
    ]
    check = validate_schema({"fields": fields}, ["gdpr", "Hipaa", "pci-dss", "SOX"])
    found = {(i.field, i.framework, i.category) for i in check.compliance_issues}
    assert found == {
        ("email", "GDPR", "contact data (email)"),
        ("email", "HIPAA", "contact data (email)"),
        ("first_name", "GDPR", "personal name"),
        ("first_name", "HIPAA", "personal name"),
        ("dob", "GDPR", "date of birth"),
        ("dob", "HIPAA", "date of birth"),
        ("diagnosis_code", "HIPAA", "health information"),
        ("card_number", "PCI-DSS", "primary account number"),
        ("cvv", "PCI-DSS", "card security code"),
    }
    email = next(i for i in check.compliance_issues if i.field == "email")
    assert "example.com" in email.handling
    assert "copied from no real record" in email.handling
    card = next(i for i in check.compliance_issues if i.field == "card_number")
    assert "Luhn" in card.handling
    assert check.valid  # compliance notes and an unknown framework never invalidate
    assert [(e.field, e.severity) for e in check.errors] == [("compliance_requirements", "warning")]
    assert "SOX" in check.errors[0].message
