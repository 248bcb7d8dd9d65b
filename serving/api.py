"""The HTTP API of the online scorer: request and response models (pydantic 2) and the OpenAPI
document built from them (OpenAPI 3.1, https://spec.openapis.org/oas/v3.1.0) with a request example,
rendered at ``/docs`` by Swagger UI (:mod:`serving.app`).

Request bounds that keep bad input a 422 naming the field: integer ids and context values fit an
Int64 column, ``ts`` is integer epoch milliseconds or ISO 8601 within [1970, 2100)."""

from __future__ import annotations

import datetime as dt
import time
from typing import Any

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    NaiveDatetime,
    StrictFloat,
    StrictInt,
    StrictStr,
    field_validator,
)

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
"""Integer ids and context values must fit a Polars/Arrow Int64 column (larger ones are a 422, not a 500)."""
Id = StrictInt | StrictStr
EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
TS_MIN = EPOCH
TS_MAX = dt.datetime(2100, 1, 1, tzinfo=dt.UTC)
"""``ts`` must fall in [1970-01-01, 2100-01-01) UTC: the range of real requests, far inside what the
feature lookup's millisecond datetimes hold."""
TS_MIN_MS, TS_MAX_MS = 0, (TS_MAX - EPOCH) // dt.timedelta(milliseconds=1)
ContextValue = StrictInt | StrictFloat | StrictStr | None
EXAMPLE = {"user_id": 712, "item_ids": [5239, 6831, 7008], "ts": 1651300000000, "context": {"tab": 1}, "top_k": 2}


class RankRequest(BaseModel):
    """One user, one moment, one context, and the candidate items to rank."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [EXAMPLE]})

    user_id: Id = Field(description="The user's id (integer or string, as in the training data).")
    item_ids: list[Id] = Field(min_length=1, description="Candidate item ids (all integers or all strings).")
    ts: StrictInt | AwareDatetime | NaiveDatetime | None = Field(
        default=None,
        description="Request time: integer epoch milliseconds (a number with a fraction is refused) or ISO 8601 "
        "(naive = UTC), within [1970-01-01, 2100-01-01); default now.",
    )
    context: dict[str, ContextValue] = Field(
        default_factory=dict, description="Context columns of the FeatureSpec (e.g. KuaiRand 'tab'); missing = null."
    )
    top_k: int | None = Field(default=None, ge=1, description="Return only the best k candidates.")

    @field_validator("user_id", "item_ids", "context")
    @classmethod
    def _fits_int64(cls, value: Any) -> Any:
        values = value if isinstance(value, list) else value.values() if isinstance(value, dict) else [value]
        for v in values:
            if isinstance(v, int) and not INT64_MIN <= v <= INT64_MAX:
                raise ValueError(f"integer {v} does not fit 64 bits ({INT64_MIN} ... {INT64_MAX})")
        return value

    @field_validator("ts", mode="before")
    @classmethod
    def _integer_milliseconds(cls, value: object) -> object:
        """One unit for numbers: integer epoch milliseconds (``1.5`` would otherwise read as seconds)."""
        if isinstance(value, float):
            raise ValueError("a number must be integer epoch milliseconds (got a float); or use ISO 8601")
        return value

    @field_validator("ts")
    @classmethod
    def _in_range(cls, value: int | dt.datetime | None) -> int | dt.datetime | None:
        if value is None:
            return value
        ms = value if isinstance(value, int) else _datetime_ms(value)
        if not TS_MIN_MS <= ms < TS_MAX_MS:
            raise ValueError(
                f"must lie in [{TS_MIN.isoformat()}, {TS_MAX.isoformat()}) ({TS_MIN_MS} <= ms < {TS_MAX_MS})"
            )
        return value

    def epoch_ms(self) -> int:
        """``ts`` in epoch milliseconds, exactly (integer arithmetic; now when absent)."""
        if self.ts is None:
            return time.time_ns() // 1_000_000
        return self.ts if isinstance(self.ts, int) else _datetime_ms(self.ts)


def _datetime_ms(value: dt.datetime) -> int:
    """Epoch milliseconds of a datetime (naive = UTC), exactly (integer arithmetic)."""
    aware = value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value
    return (aware - EPOCH) // dt.timedelta(milliseconds=1)


class RankedItem(BaseModel):
    item_id: Id
    score: float = Field(description="Weighted fusion of the task probabilities.")
    probabilities: dict[str, float] = Field(description="Task -> probability.")


class RankResponse(BaseModel):
    model_version: str
    user_id: Id
    ts: str
    weights: dict[str, float]
    results: list[RankedItem] = Field(description="Sorted by score, best first (ties keep request order).")
    missing_rows: dict[str, int] = Field(description="Per entity: candidates without a snapshot row (defaults).")
    oov: dict[str, int] = Field(description="Per categorical feature: candidates encoded to OOV (non-zero only).")


class ErrorResponse(BaseModel):
    detail: Any


def _json(model: type[BaseModel], components: dict[str, Any], example: Any = None) -> dict[str, Any]:
    schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
    components.update(schema.pop("$defs", {}))
    components[model.__name__] = schema
    media: dict[str, Any] = {"schema": {"$ref": f"#/components/schemas/{model.__name__}"}}
    if example is not None:
        media["example"] = example  # what Swagger UI's "Try it out" starts from
    return {"content": {"application/json": media}}


def openapi_document(title: str, version: str) -> dict[str, Any]:
    """The OpenAPI 3.1 document of the scorer's routes."""
    comps: dict[str, Any] = {}
    text = {"content": {"text/plain": {"schema": {"type": "string"}}}}
    rank = {
        "summary": "Rank candidate items for one user",
        "requestBody": {"required": True, **_json(RankRequest, comps, EXAMPLE)},
        "responses": {
            "200": {
                "description": "Candidates with task probabilities and fused score, best first",
                **_json(RankResponse, comps),
            },
            "413": {"description": "Too many candidates or body too large", **_json(ErrorResponse, comps)},
            "422": {"description": "Validation error naming the field", **_json(ErrorResponse, comps)},
            "503": {"description": "No model loaded yet", **_json(ErrorResponse, comps)},
        },
    }
    paths = {
        "/v1/rank": {"post": rank},
        "/healthz": {"get": {"summary": "Liveness", "responses": {"200": {"description": "alive", **text}}}},
        "/readyz": {
            "get": {
                "summary": "Readiness (a model is loaded)",
                "responses": {"200": {"description": "ready", **text}, "503": {"description": "not ready", **text}},
            }
        },
        "/metrics": {
            "get": {"summary": "Prometheus metrics", "responses": {"200": {"description": "text format 0.0.4", **text}}}
        },
    }
    return {
        "openapi": "3.1.0",
        "info": {"title": title, "version": version},
        "paths": paths,
        "components": {"schemas": comps},
    }
