"""The action API's operations, one method per operationId, shared by the HTTP service
(app.py) and the Bedrock action group's Lambda: each takes its request model and answers its
answer model, or raises ActionError with the status and the reason."""

from __future__ import annotations

import json
import os
import secrets
import time
import uuid
from collections.abc import Collection, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import polars as pl

from firepipe.core.genai.fire_request import DATA_TYPE as FIRE
from firepipe.core.genai.quality import quality_metrics
from firepipe.core.genai.schema_check import SchemaCheck, SchemaError, validate_schema
from firepipe.core.genai.tabular import OUTPUT_FORMATS, TabularSchema, generate, write
from firepipe.core.history import GenerationRecord
from firepipe.services.actions import fire, generations
from firepipe.services.actions.models import (
    DEFAULT_LIST_LIMIT,
    MAX_INLINE_ROWS,
    MAX_LIST_LIMIT,
    Cell,
    GenerateRequest,
    GenerateResponse,
    Generation,
    GenerationList,
    Passage,
    QualityRequest,
    SearchAnswer,
    SearchRequest,
    ValidateRequest,
)
from firepipe.services.actions.runs import (
    FireRuns,
    NoInstanceError,
    PartitionBusyError,
    generation_status,
)
from firepipe.settings import Environment, environment, local_paths

DESTINATIONS = ("inline", "local", "s3")
DATA_TYPES = ("custom", FIRE)
_EXTENSIONS = {"parquet": "parquet", "csv": "csv", "json": "jsonl"}
# GenerateRequest's fields by the data_type they serve (data_type and seed serve both).
_OWN_FIELDS = {
    "custom": frozenset(
        {"volume", "table", "compliance_requirements", "output_format", "destination"}
    ),
    FIRE: frozenset(
        {"families", "mix", "devices", "duration_s", "fault_share", "use_gpu", "batch"}
    ),
}
_SHARED_FIELDS = frozenset({"data_type", "seed"})


class ActionError(Exception):
    """A well-formed request that cannot be served: answered with its
    status (400 unless said otherwise) and the reason."""

    def __init__(
        self, detail: str, errors: list[SchemaError] | None = None, status: int = 400
    ) -> None:
        super().__init__(detail)
        self.detail, self.errors, self.status = detail, errors or [], status


class Found(Protocol):
    """A passage a knowledge base answers (firepipe.core.genai.kb.index.Passage's shape)."""

    @property
    def source(self) -> str: ...
    @property
    def heading(self) -> str | None: ...
    @property
    def text(self) -> str: ...
    @property
    def score(self) -> float: ...


class KnowledgeSearch(Protocol):
    """The knowledge base as searchKnowledgeBase uses it."""

    def search(self, question: str, k: int) -> Sequence[Found]: ...


class Actions:
    """The operations over one output folder (default $FIREPIPE_HOME/generated), the Dagster
    runs of fire generations, the generation history, the lake and the knowledge base; each
    of those is the environment's unless given."""

    def __init__(
        self,
        output_root: Path | None = None,
        *,
        runs: FireRuns | None = None,
        history: Any = None,
        lakehouse: Any = None,
        knowledge_base: KnowledgeSearch | None = None,
        local_files: bool = True,
    ) -> None:
        self.output_root = (output_root or local_paths().home / "generated").resolve()
        self._runs, self._history, self._lakehouse = runs, history, lakehouse
        self.knowledge_base = knowledge_base
        self.local_files = local_files

    @classmethod
    def from_environment(
        cls, output_root: Path | None = None, *, serverless: bool = False
    ) -> Actions:
        """The operations with the environment's knowledge base (none when its settings are
        missing: searchKnowledgeBase then answers 503 with the reason). `serverless` (the
        Bedrock Lambda in AWS), and any process in AWS (the ECS service too): no 'local' files,
        which a task's or function's disk would lose, and fire generations only through the
        daemon's run queue, never in this process (whose role runs no generation)."""
        from firepipe.lib.plain_resources import UnsetVariableError, is_plain, resolved
        from firepipe.resources import resource_for
        from firepipe.services.actions.runs import DagsterRuns

        knowledge_base = resource_for("knowledge_base", environment(), local_paths())
        try:
            knowledge_base = resolved(knowledge_base) if is_plain(knowledge_base) else None
        except UnsetVariableError:
            knowledge_base = None
        remote = serverless or environment() is Environment.AWS
        return cls(
            output_root,
            runs=DagsterRuns(in_process=not remote),
            knowledge_base=knowledge_base,
            local_files=not remote,
        )

    @property
    def runs(self) -> FireRuns:
        if self._runs is None:
            from firepipe.services.actions.runs import DagsterRuns

            self._runs = DagsterRuns()
        return self._runs

    @property
    def history(self) -> Any:
        if self._history is None:
            self._history = _resource("generation_history")
        return self._history

    @property
    def lakehouse(self) -> Any:
        if self._lakehouse is None:
            self._lakehouse = _resource("lakehouse")
        return self._lakehouse

    def generate_synthetic_data(self, request: GenerateRequest) -> GenerateResponse:
        """generateSyntheticData."""
        kind = request.data_type.strip().lower()
        if kind not in DATA_TYPES:
            raise ActionError(f"data_type {request.data_type!r}: use one of {DATA_TYPES}")
        _own_fields_only(request, kind)
        if kind == FIRE:
            return self._generate_fire(request)
        if not self.local_files and request.destination.type.strip().lower() == "local":
            raise ActionError("this service keeps no local files: use 'inline' or 's3'")
        answer, record = _generate(request, self.output_root)
        self.history.record(record)
        return answer

    def _generate_fire(self, request: GenerateRequest) -> GenerateResponse:
        started = time.perf_counter()
        generation_id = uuid.uuid4().hex
        seed = secrets.randbits(31) if request.seed is None else request.seed
        try:
            with _instance_errors():
                plan, states = fire.launch(request, seed, generation_id, self.runs)
        except fire.FireError as exc:
            raise ActionError(str(exc)) from exc
        return GenerateResponse(
            generation_id=generation_id,
            status=generation_status(states),
            records_generated=plan.rows,
            output_location=fire.TABLE,
            data_quality_metrics=None,
            execution_time_ms=round((time.perf_counter() - started) * 1000, 3),
            seed=seed,
            warnings=plan.warnings,
            data=None,
            runs=fire.run_infos(states),
            partitions=[run.partition_key for run in plan.runs],
        )

    def get_generation(self, generation_id: str) -> Generation:
        """getGeneration: the runs' state and the history's records."""
        with _instance_errors():
            found = generations.find(generation_id, self.runs, self.history)
        if found is None:
            raise ActionError(f"no generation {generation_id!r}", status=404)
        return found

    def list_generations(self, limit: int = DEFAULT_LIST_LIMIT) -> GenerationList:
        """listGenerations: the latest, newest first."""
        if not 1 <= limit <= MAX_LIST_LIMIT:
            raise ActionError(f"limit must be between 1 and {MAX_LIST_LIMIT}, got {limit}")
        with _instance_errors():
            return GenerationList(generations=generations.latest(limit, self.runs, self.history))

    def validate_schema(self, request: ValidateRequest) -> SchemaCheck:
        """validateSchema: a schema with errors is an answer (valid false)."""
        return validate_schema(request.table, request.compliance_requirements)

    def calculate_quality_metrics(self, request: QualityRequest) -> dict[str, Any]:
        """calculateQualityMetrics over rows given with their schema, or over partitions of
        fire data (a generation's, or named) against their family's reference batch."""
        given = [request.table is not None or request.data is not None]
        given += [request.generation_id is not None, request.partitions is not None]
        if sum(given) != 1:
            raise ActionError("give exactly one of: schema with data, generation_id, partitions")
        if request.table is None and request.data is None:
            return self._fire_quality(request)
        if request.table is None or request.data is None:
            raise ActionError("rows to measure need both schema and data")
        _valid(request.table, None, None)
        frame = _frame(request.table, request.data)
        try:
            return quality_metrics(frame, request.table)
        except (ValueError, pl.exceptions.PolarsError) as exc:
            raise ActionError(f"cannot measure these rows: {exc}") from exc

    def _fire_quality(self, request: QualityRequest) -> dict[str, Any]:
        try:
            if request.partitions is not None:
                cells = fire.parse_partitions(request.partitions)
            else:
                found = self.get_generation(str(request.generation_id))
                if found.data_type != FIRE:
                    raise ActionError(
                        f"generation {found.generation_id} is a custom table: send its rows "
                        "with its schema"
                    )
                if found.status != "succeeded":
                    raise ActionError(
                        f"generation {found.generation_id} is {found.status}: measure it "
                        "when it has succeeded",
                        status=409,
                    )
                cells = fire.parse_partitions(found.partitions)
            if not cells:
                raise ActionError("name at least one partition")
            return fire.measure(self.lakehouse, cells)
        except fire.FireError as exc:
            raise ActionError(str(exc)) from exc
        except fire.LakeError as exc:
            raise ActionError(str(exc), status=503) from exc

    def search_knowledge_base(self, request: SearchRequest) -> SearchAnswer:
        """searchKnowledgeBase: the passages closest to the question."""
        if self.knowledge_base is None:
            raise ActionError(
                "no knowledge base is configured for this service: run `firepipe kb build`",
                status=503,
            )
        try:
            found = self.knowledge_base.search(request.query, request.k)
        except FileNotFoundError as exc:  # the local index's IndexMissingError among them
            raise ActionError(
                f"the knowledge base has no index ({exc}): run `firepipe kb build`", status=503
            ) from exc
        except ValueError as exc:  # e.g. a question of blanks
            raise ActionError(f"cannot search: {exc}") from exc
        return SearchAnswer(
            passages=[
                Passage(
                    source=p.source,
                    heading=p.heading or None,
                    text=p.text,
                    score=float(p.score),
                )
                for p in found
            ]
        )


def _own_fields_only(request: GenerateRequest, kind: str) -> None:
    """Refuse fields of the other data_type, which would otherwise be dropped unseen; a fire
    request may name the default destination (inline, no location), which changes nothing."""
    given = request.model_fields_set - _SHARED_FIELDS - _OWN_FIELDS[kind]
    where = request.destination
    if kind == FIRE and where.type.strip().lower() == "inline" and where.location is None:
        given.discard("destination")
    if given:
        raise ActionError(
            f"{', '.join(_field_names(given))} do not belong to data_type {kind!r}: its own "
            f"fields are {', '.join(_field_names(_OWN_FIELDS[kind]))}, and seed"
        )


def _field_names(fields: Collection[str]) -> list[str]:
    """The fields as a request names them (`schema`, not `table`), in the model's order."""
    return [
        info.alias or name for name, info in GenerateRequest.model_fields.items() if name in fields
    ]


@contextmanager
def _instance_errors() -> Iterator[None]:
    """No Dagster instance to run on (or no daemon where runs may not execute in process): a
    503; a partition another generation writes now: a 409; with the reason, from the HTTP
    service and the Lambda alike."""
    try:
        yield
    except NoInstanceError as exc:
        raise ActionError(str(exc), status=503) from exc
    except PartitionBusyError as exc:
        raise ActionError(str(exc), status=409) from exc


def _resource(key: str) -> Any:
    """The environment's resource `key`, its variables read (a plain resource's value); a
    variable it needs that is unset is the service's configuration: a 503 that names it."""
    from firepipe.lib.plain_resources import UnsetVariableError, resolved
    from firepipe.resources import resource_for

    try:
        return resolved(resource_for(key, environment(), local_paths()))
    except UnsetVariableError as exc:
        raise ActionError(
            f"this service has no {key.replace('_', ' ')}: {exc}", status=503
        ) from exc


def _valid(table: TabularSchema, compliance: list[str] | None, rows: int | None) -> SchemaCheck:
    check = validate_schema(table, compliance, rows)
    if not check.valid:
        raise ActionError(
            "the schema is invalid", [e for e in check.errors if e.severity == "error"]
        )
    return check


def _generate(request: GenerateRequest, root: Path) -> tuple[GenerateResponse, GenerationRecord]:
    """A custom table, generated and written; with its history record."""
    started_at, started = datetime.now(UTC), time.perf_counter()
    fmt = request.output_format.strip().lower()
    where = request.destination.type.strip().lower()
    if request.table is None or request.volume is None:
        raise ActionError("data_type 'custom' needs a schema and a volume")
    if fmt not in OUTPUT_FORMATS:
        raise ActionError(f"output_format {request.output_format!r}: use one of {OUTPUT_FORMATS}")
    if where not in DESTINATIONS:
        raise ActionError(
            f"destination type {request.destination.type!r}: use one of {DESTINATIONS}"
        )
    if where == "inline" and request.volume > MAX_INLINE_ROWS:
        raise ActionError(
            f"an inline answer holds at most {MAX_INLINE_ROWS} rows, {request.volume} asked: "
            "use destination 'local' or 's3'"
        )
    check = _valid(request.table, request.compliance_requirements, request.volume)
    generation_id = uuid.uuid4().hex
    name = f"{generation_id}.{_EXTENSIONS[fmt]}"
    target: Path | str | None = None
    if where == "local":
        target = _target(root, request.destination.location, generation_id, fmt)
    elif where == "s3":
        target = s3_target(request.destination.location, name)
    seed = secrets.randbits(32) if request.seed is None else request.seed
    try:
        frame = generate(request.table, request.volume, seed)
    except ValueError as exc:  # what only drawing finds, e.g. a unique float with min == max
        raise ActionError(f"cannot generate: {exc}") from exc
    if isinstance(target, Path):
        try:
            write(frame, fmt, target)
        except OSError as exc:  # e.g. a name too long for the file system
            location = request.destination.location
            raise ActionError(f"cannot write to location {location!r}: {exc}") from exc
    elif isinstance(target, str):
        write_s3(frame, fmt, target)
    warnings = [f"{e.field}: {e.message}" for e in check.errors if e.severity == "warning"]
    warnings += [
        f"{i.field}: {i.framework} {i.category}. {i.handling}" for i in check.compliance_issues
    ]
    seconds = time.perf_counter() - started
    location = None if target is None else str(target)
    answer = GenerateResponse(
        generation_id=generation_id,
        status="completed",
        records_generated=frame.height,
        output_location=location,
        data_quality_metrics=quality_metrics(frame, request.table),
        execution_time_ms=round(seconds * 1000, 3),
        seed=seed,
        warnings=warnings,
        data=_rows(frame) if target is None else None,
    )
    record = GenerationRecord(
        run_id=generation_id,
        asset_key=generations.CUSTOM_ASSET,
        partition_key=None,
        spec={
            "schema": request.table.model_dump(mode="json"),
            "volume": request.volume,
            "output_format": fmt,
            "destination": where,
        },
        seed=seed,
        rows=frame.height,
        location=location or "inline",
        started_at=started_at,
        duration_s=seconds,
        backend="polars",
        status="succeeded",
    )
    return answer, record


def s3_target(location: str | None, name: str) -> str:
    """s3://bucket/prefix/<name>; refused when the location is no S3 URI or AWS has no
    credentials here."""
    if not location or not location.startswith("s3://") or len(location) <= len("s3://"):
        raise ActionError(f"destination 's3' needs a location s3://bucket/prefix, got {location!r}")
    bucket = location.removeprefix("s3://").split("/", 1)[0]
    if not bucket:
        raise ActionError(f"location {location!r} names no bucket")
    from botocore.session import Session  # type: ignore[import-untyped]

    if Session().get_credentials() is None:
        raise ActionError(
            "destination 's3' needs AWS credentials, and none are configured for this "
            "service (AWS_PROFILE, AWS_ACCESS_KEY_ID, an instance or task role)"
        )
    return f"{location.rstrip('/')}/{name}"


def write_s3(frame: pl.DataFrame, fmt: str, uri: str) -> None:
    """The file at `uri`, through polars' object store as `firepipe generate --out s3://`
    writes; the region and endpoint come from the usual AWS variables."""
    options = {
        option: value
        for option, var in (
            ("aws_region", "AWS_REGION"),
            ("aws_region", "AWS_DEFAULT_REGION"),
            ("aws_endpoint_url", "AWS_ENDPOINT_URL_S3"),
            ("aws_endpoint_url", "AWS_ENDPOINT_URL"),
        )
        if (value := os.environ.get(var))
    }
    if options.get("aws_endpoint_url", "").startswith("http://"):
        options["aws_allow_http"] = "true"
    try:
        if fmt == "parquet":
            frame.write_parquet(uri, storage_options=options)
        elif fmt == "csv":
            frame.write_csv(uri, storage_options=options)
        else:
            # DataFrame.write_ndjson takes no storage options; the lazy sink does.
            frame.lazy().sink_ndjson(uri, storage_options=options)
    except (OSError, pl.exceptions.PolarsError) as exc:
        gist = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ActionError(f"cannot write {uri}: {gist}") from exc


def _target(root: Path, location: str | None, generation_id: str, fmt: str) -> Path:
    """The file under `root`; a location that leaves the root (absolute, `..`, a link out)
    is refused."""
    try:
        folder = (root / (location or "")).resolve()
    except (ValueError, OSError):  # a NUL byte, a link loop
        folder = Path("/")
    if Path(location or "").is_absolute() or not folder.is_relative_to(root):
        raise ActionError(f"location {location!r} must be a folder inside the output folder")
    return folder / f"{generation_id}.{_EXTENSIONS[fmt]}"


def _rows(frame: pl.DataFrame) -> list[dict[str, Any]]:
    """Rows as JSON values (dates and datetimes as ISO text), as a JSON file would hold them."""
    rows: list[dict[str, Any]] = json.loads(frame.write_json())
    return rows


def _frame(table: TabularSchema, data: list[dict[str, Cell]]) -> pl.DataFrame:
    names = [f.name for f in table.fields]
    unknown = sorted({k for row in data for k in row} - set(names))
    if unknown:
        raise ActionError(f"rows hold keys that are not fields of the schema: {unknown}")
    columns = []
    for name in names:
        values = [row.get(name) for row in data]
        numbers = [v for v in values if v is not None]
        numeric = all(isinstance(v, int | float) and not isinstance(v, bool) for v in numbers)
        if numeric and any(isinstance(v, float) for v in numbers):  # polars refuses int + float
            values = [None if v is None else float(v) for v in values]
        try:
            columns.append(pl.Series(name, values))
        except (TypeError, OverflowError, pl.exceptions.PolarsError) as exc:
            raise ActionError(f"field {name!r} mixes value types: {exc}") from exc
    return pl.DataFrame(columns)
