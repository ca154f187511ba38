"""The local stand-in for the Bedrock agent: a deterministic planner, NOT a language model. It
reads a structured or simple English request and answers the tool calls (operationId + request
body) the agent would make, or names what it cannot read instead of guessing.

Grammar (case-insensitive; docs/generator-agent.md has examples):

- Structured: a JSON object. `{"operationId": ID, "body": {...}}` is that call as is; a bare
  body is read by its keys: `schema` + `volume` -> generateSyntheticData, `schema` + `data` (or
  `generation_id`, `partitions`) -> calculateQualityMetrics, `schema` alone ->
  validateSchema, `families`/`mix`/`devices` -> generateSyntheticData of fire scenarios,
  `query` -> searchKnowledgeBase.
- A question (it ends with "?", or starts with what/how/why/which/where/when/who/does/is/are/
  can/should/explain/describe/tell) -> searchKnowledgeBase {query} (the action API's k).
- "list the last N generations" -> listGenerations (no N: the action API's default);
  "status of generation ID" -> getGeneration; "quality of generation ID" ->
  calculateQualityMetrics.
- "validate"/"check" + a schema (JSON, or `columns a:uuid, b:integer(1..9)`) -> validateSchema,
  with GDPR / HIPAA / PCI-DSS named -> compliance_requirements.
- A custom table: a schema as above, "N rows|records", a format (parquet, csv, json), "seed
  N", "to a file"/"save" -> destination local (inline otherwise; more than 1000 rows go to a
  file, and the plan says so).
- Fire scenarios (anything else that names a family):
  - families by their words: cooking, kitchen(s), frying, toasting, broiling, steam, shower,
    bathroom, dust, cigarette, smoking, candle(s), nuisance -> nuisance; smouldering,
    smoldering, upholstery, cotton -> smouldering; flaming, flames, blaze -> flaming;
    baseline, clean, quiet, normal, background -> baseline.
  - counts: digits ("200", "1,000", "2k") or words up to thousands ("two hundred and fifty").
    A count before a family word is that family's devices ("200 kitchens"); before devices,
    rooms, homes, sensors, detectors, houses, apartments, units it is the total.
  - shares: "30% flaming", "thirty percent flaming"; "a few" = 10 %, "some" = 20 % of all
    devices. Families named without a count share what is left equally.
  - durations: "ten minutes each", "90 s", "1 h", "for 2 hours" (s, sec, seconds, m, min,
    minutes, h, hr, hours) -> duration_s; units from larger to smaller add up, side by side
    or joined by "and": "1 h 30 min" = 5400 s, "2 minutes and 30 seconds" = 150 s.
  - faults: "five percent faulty sensors", "5% faults", "no faults" -> fault_share.
  - "seed N", "batch N", "on a GPU" / "with cuda" -> use_gpu (default CPU).
  Speed words (slow, fast) are read but a family draws its growth rates from the scenario
  catalog, so the plan says they are not selectable. A format is refused: fire data lands in
  the lake.
Each setting is given once: a second value (a second total, duration, fault share, seed, batch,
row count or format; GPU and CPU both) fails with "cannot read: '...': ... given twice" rather
than one of them being picked. Words that carry nothing (with, and, of, generate, please, ...)
are skipped; any other word makes the plan fail with "cannot read: '...'", naming each unread
span.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from firepipe.core.genai import planner_words as w
from firepipe.core.genai.fire_request import DATA_TYPE as FIRE_DATA_TYPE
from firepipe.core.genai.fire_request import (
    DEFAULT_DEVICES,
    DEFAULT_DURATION_S,
    DEFAULT_FAULT_SHARE,
)
from firepipe.core.genai.tabular import MAX_INLINE_ROWS

_SHARE_TOLERANCE = 1e-9


@dataclass(frozen=True)
class ToolCall:
    """One call the agent would make: the operationId and its request body."""

    operation_id: str
    body: dict[str, Any]


@dataclass(frozen=True)
class Plan:
    """The calls in order, and what the reader should know about how the request was read."""

    calls: list[ToolCall]
    notes: list[str] = field(default_factory=list)


class PlanError(ValueError):
    """A request the planner cannot read; the message names what it could not read."""


def plan(request: str) -> Plan:
    """The tool calls for `request` (see the module docstring for the grammar)."""
    text = request.strip()
    if not text:
        raise PlanError("cannot read an empty request")
    try:
        return _plan(text)
    except w.PlanReadError as exc:
        raise PlanError(str(exc)) from None


def _plan(text: str) -> Plan:
    value, rest = _json_part(text)
    if value is not None and not rest.strip(" .,;:"):
        return _structured(value)
    if value is None and (found := _generation_call(text)) is not None:
        return found
    if value is None and _is_question(text.lower()):
        return Plan([ToolCall("searchKnowledgeBase", {"query": text})])
    if value is None:
        value, rest = w.columns(rest)
    tokens = w.tokens(rest)
    if value is not None:
        if any(t in w.VALIDATE_VERBS for t in tokens[:2]):
            return _validate(value, [t for t in tokens if t not in w.VALIDATE_VERBS])
        return _custom(value, tokens)
    return _fire(tokens)


_GENERATION = re.compile(r"\bgeneration\s+([0-9a-z][\w-]{3,63})\b", re.IGNORECASE)
_LIST = re.compile(
    r"^(?:list|show)\s+(?:the\s+|my\s+)?(?:(?:latest|recent|last)\s+)?(\d+\s+)?generations\b",
    re.IGNORECASE,
)
_QUALITY_WORDS = ("quality", "measure", "metrics", "score")


def _generation_call(text: str) -> Plan | None:
    """'list the last 5 generations', 'status of generation ID', 'quality of generation ID'."""
    if (listed := _LIST.match(text)) is not None:
        rest = text[listed.end() :].strip(" .?!")
        if rest:
            raise PlanError(f"cannot read: {rest!r}")
        # Without a number the action API's own default limit applies.
        body = {"limit": int(listed.group(1))} if listed.group(1) else {}
        return Plan([ToolCall("listGenerations", body)])
    found = _GENERATION.search(text)
    if found is None:
        return None
    generation_id = found.group(1)
    if any(word in text.lower() for word in _QUALITY_WORDS):
        return Plan([ToolCall("calculateQualityMetrics", {"generation_id": generation_id})])
    return Plan([ToolCall("getGeneration", {"generation_id": generation_id})])


def _json_part(text: str) -> tuple[dict[str, Any] | None, str]:
    """The JSON object in `text` (from its first '{' to its last '}'), and the words around it."""
    start, end = text.find("{"), text.rfind("}")
    if start < 0 or end < start:
        return None, text
    try:
        value = json.loads(text[start : end + 1])
    except json.JSONDecodeError as exc:
        raise PlanError(f"cannot read: {text[start : end + 1]!r} (not JSON: {exc})") from None
    if not isinstance(value, dict):
        raise PlanError(f"cannot read: {text[start : end + 1]!r} (not a JSON object)")
    return value, f"{text[:start]} {text[end + 1 :]}"


def _is_question(words: str) -> bool:
    first = words.split(maxsplit=1)[0] if words.split() else ""
    return words.rstrip().endswith("?") or first in w.QUESTION_WORDS


def _structured(value: dict[str, Any]) -> Plan:
    if "operationId" in value:
        body = value.get("body", {})
        if not isinstance(body, dict) or set(value) - {"operationId", "body"}:
            raise PlanError('cannot read: a call is {"operationId": ID, "body": {...}}')
        return Plan([ToolCall(str(value["operationId"]), body)])
    keys = set(value)
    if "query" in keys:
        return Plan([ToolCall("searchKnowledgeBase", value)])
    if keys & {"data", "generation_id", "partitions"}:
        return Plan([ToolCall("calculateQualityMetrics", value)])
    if keys & {"families", "mix", "devices", "duration_s", "fault_share"}:
        return Plan([ToolCall("generateSyntheticData", {"data_type": FIRE_DATA_TYPE, **value})])
    if "volume" in keys:
        return Plan([ToolCall("generateSyntheticData", {"data_type": "custom", **value})])
    if "schema" in keys:
        return Plan([ToolCall("validateSchema", value)])
    if "fields" in keys:
        return Plan([ToolCall("validateSchema", {"schema": value})])
    raise PlanError(f"cannot read: a JSON object with keys {sorted(keys)}")


def _validate(schema: dict[str, Any], tokens: list[str]) -> Plan:
    reader = w.Reader(tokens[1:])
    compliance = reader.compliance()
    reader.skip_fillers()
    reader.fail_on_leftovers()
    body: dict[str, Any] = {"schema": _schema_body(schema), "compliance_requirements": compliance}
    return Plan([ToolCall("validateSchema", body)])


def _schema_body(schema: dict[str, Any]) -> dict[str, Any]:
    return schema["schema"] if set(schema) == {"schema"} else schema


def _custom(schema: dict[str, Any], tokens: list[str]) -> Plan:
    reader = w.Reader(tokens)
    read = reader.custom()
    notes: list[str] = []
    if read.rows is None:
        raise PlanError("cannot read how many rows: say e.g. '50 rows'")
    destination = {"type": "local"} if read.to_file else {"type": "inline"}
    if not read.to_file and read.rows > MAX_INLINE_ROWS:
        destination = {"type": "local"}
        notes.append(f"{read.rows} rows are more than an answer holds: written to a file")
    body: dict[str, Any] = {
        "data_type": "custom",
        "volume": read.rows,
        "schema": _schema_body(schema),
        "compliance_requirements": read.compliance,
        "output_format": read.output_format or "json",
        "destination": destination,
    }
    if read.seed is not None:
        body["seed"] = read.seed
    return Plan([ToolCall("generateSyntheticData", body)], notes)


def _fire(tokens: list[str]) -> Plan:
    read = w.Reader(tokens).fire()
    if not read.mentions:
        raise PlanError(
            "cannot read a dataset, a schema or a question in this request: name fire "
            "families (cooking, smouldering, flaming, baseline), give columns, or ask a question"
        )
    notes = list(dict.fromkeys(read.notes))
    devices, shares, equal = _mix(read.mentions, read.devices)
    body: dict[str, Any] = {"data_type": FIRE_DATA_TYPE, "devices": devices}
    if equal:
        body["families"] = list(shares)
    else:
        body["mix"] = shares
    if read.devices is None and not any(isinstance(q, int) for q in read.mentions.values()):
        notes.append(f"{devices} devices (the default): say e.g. '200 rooms' for another count")
    for key, value, default in (
        ("duration_s", read.duration_s, f"{DEFAULT_DURATION_S} s each"),
        ("fault_share", read.fault_share, f"{DEFAULT_FAULT_SHARE:.0%} faulty sensors"),
    ):
        if value is None:
            notes.append(f"{default} (the default)")
        else:
            body[key] = value
    for key, number in (("seed", read.seed), ("batch", read.batch)):
        if number is not None:
            body[key] = number
    body["use_gpu"] = read.use_gpu
    return Plan([ToolCall("generateSyntheticData", body)], notes)


def _mix(mentions: dict[str, w.Quantity], total: int | None) -> tuple[int, dict[str, float], bool]:
    """All devices, each family's share of them, and whether the shares are equal by default.
    A mention is a count (int), a share (float) or neither (None: shares what is left)."""
    counts = {f: q for f, q in mentions.items() if isinstance(q, int)}
    shares = {f: q for f, q in mentions.items() if isinstance(q, float)}
    open_families = [f for f, q in mentions.items() if q is None]
    counted, fixed = sum(counts.values()), sum(shares.values())
    if fixed > 1 + _SHARE_TOLERANCE:
        raise PlanError(f"cannot read the mix: its shares add up to {fixed:.0%}")
    derived = total is None and bool(counts)
    if total is None:
        if counts and open_families:
            named = ", ".join(open_families)
            raise PlanError(f"cannot read how many {named}: give a count or a share")
        if counts and fixed >= 1 - _SHARE_TOLERANCE:
            raise PlanError("cannot read the mix: shares of 100 % leave nothing to the counts")
        # Counts and shares: the shares are of all devices, counts included.
        total = (
            max(round(counted / (1 - fixed)), counted + len(shares)) if counts else DEFAULT_DEVICES
        )
    if counted > total:
        raise PlanError(f"cannot read the mix: {counted} devices counted but {total} in all")
    result = {f: c / total for f, c in counts.items()}
    scale = (1 - sum(result.values())) / fixed if derived and shares else 1.0
    result |= {f: s * scale for f, s in shares.items()}
    left = 1 - sum(result.values())
    if open_families:
        if left <= _SHARE_TOLERANCE:
            raise PlanError(f"cannot read the mix: nothing is left for {', '.join(open_families)}")
        result |= {f: left / len(open_families) for f in open_families}
    elif abs(left) > 1e-6:
        raise PlanError(
            f"cannot read the mix: it covers {1 - left:.0%} of the {total} devices; name the rest"
        )
    # Exactly 1 in floating point: the last family takes what the others leave.
    last = list(result)[-1]
    result[last] = 1 - sum(v for f, v in result.items() if f != last)
    return total, result, (not counts and not shares) or len(result) == 1
