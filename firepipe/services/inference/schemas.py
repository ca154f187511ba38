"""The bodies of the inference service as pydantic models, for its OpenAPI document only:
requests are read by `firepipe.core.serving.payloads` (orjson, no validation layer), which
holds them to the same rules."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, create_model

from firepipe.core.readings import CHANNELS
from firepipe.core.serving.payloads import ISO_TIME_PATTERN

_CHANNEL_FIELDS = {
    c.name: (
        float | None,
        Field(
            None,
            ge=c.min_value,
            le=c.max_value,
            description=f"{c.description} ({c.unit}); null or absent: not measured",
        ),
    )
    for c in CHANNELS
}


class _ReadingKeys(BaseModel):
    model_config = ConfigDict(extra="forbid")

    device_id: str = Field(pattern=r"\S", description="the device (its online state's key)")
    ts: str = Field(
        pattern=f"^{ISO_TIME_PATTERN}$",
        description="ISO 8601 time of the reading (as silver reads one: T or a space, an "
        "optional fraction, Z or an offset or none, which is UTC); echoed back as sent",
        examples=["2026-12-06T00:00:01Z"],
    )
    site_id: str | None = Field(None, description="the site; accepted, not read by scoring")


ReadingIn = create_model(
    "ReadingIn",
    __base__=_ReadingKeys,
    __doc__="One reading: any subset of the channels; a device's channels make its profile.",
    **_CHANNEL_FIELDS,  # type: ignore[call-overload]
)


class InvocationRequest(BaseModel):
    """Readings to score, in order; as application/jsonlines, one reading object a line."""

    model_config = ConfigDict(extra="forbid")

    readings: list[ReadingIn] = Field(min_length=1)  # type: ignore[valid-type]


class PredictionOut(BaseModel):
    """The score of one reading, in the order sent."""

    device_id: str
    ts: str = Field(description="the reading's ts, as sent")
    score: float = Field(ge=0.0, le=1.0, description="P(fire) from the reading's features")
    alarm: bool = Field(
        description="the score has stayed at or above the threshold of the device's channel "
        "profile for its persistence"
    )
    model_version: str = Field(examples=["firepipe-fire-detector/7"])


class Predictions(BaseModel):
    predictions: list[PredictionOut]


class ErrorBody(BaseModel):
    detail: str = Field(description="why the request was not answered")


class Health(BaseModel):
    status: Literal["ok"]
    model_version: str
    backend: str = Field(description="what scores: tl2cgen (compiled), lightgbm or logistic")


class ExecutionParameters(BaseModel):
    """What SageMaker batch transform asks before it splits its input."""

    MaxConcurrentTransforms: int
    BatchStrategy: Literal["MultiRecord", "SingleRecord"]
    MaxPayloadInMB: int


REQUEST_MODELS = (InvocationRequest, ReadingIn)
