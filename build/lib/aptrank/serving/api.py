"""The HTTP API of the online scorer: request and response models (pydantic 2) and the OpenAPI
document built from them (OpenAPI 3.1, https://spec.openapis.org/oas/v3.1.0), shared by every
server stack so that validation and docs do not depend on the stack."""

from __future__ import annotations

import datetime as dt
import html
import json
import time
from typing import Any

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, NaiveDatetime, StrictFloat, StrictInt, StrictStr

Id = StrictInt | StrictStr
EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
ContextValue = StrictInt | StrictFloat | StrictStr | None


class RankRequest(BaseModel):
    """One user, one moment, one context, and the candidate items to rank."""

    model_config = ConfigDict(extra="forbid")

    user_id: Id = Field(description="The user's id (integer or string, as in the training data).")
    item_ids: list[Id] = Field(min_length=1, description="Candidate item ids (all integers or all strings).")
    ts: StrictInt | AwareDatetime | NaiveDatetime | None = Field(
        default=None, description="Request time: epoch milliseconds or ISO 8601 (naive = UTC); default now."
    )
    context: dict[str, ContextValue] = Field(
        default_factory=dict, description="Context columns of the FeatureSpec (e.g. KuaiRand 'tab'); missing = null."
    )
    top_k: int | None = Field(default=None, ge=1, description="Return only the best k candidates.")

    def epoch_ms(self) -> int:
        """``ts`` in epoch milliseconds, exactly (integer arithmetic; now when absent)."""
        if self.ts is None:
            return time.time_ns() // 1_000_000
        if isinstance(self.ts, int):
            return self.ts
        aware = self.ts.replace(tzinfo=dt.UTC) if self.ts.tzinfo is None else self.ts
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


def _json(model: type[BaseModel], components: dict[str, Any]) -> dict[str, Any]:
    schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
    components.update(schema.pop("$defs", {}))
    components[model.__name__] = schema
    return {"content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{model.__name__}"}}}}


def openapi_document(title: str, version: str) -> dict[str, Any]:
    """The OpenAPI 3.1 document of the scorer's routes."""
    comps: dict[str, Any] = {}
    text = {"content": {"text/plain": {"schema": {"type": "string"}}}}
    rank = {
        "summary": "Rank candidate items for one user",
        "requestBody": {"required": True, **_json(RankRequest, comps)},
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


def docs_page(document: dict[str, Any]) -> str:
    """A self-contained HTML page listing the routes and the schemas (no external scripts)."""
    rows = "".join(
        f"<li><code>{method.upper()} {path}</code>: {html.escape(op.get('summary', ''))}</li>"
        for path, ops in document["paths"].items()
        for method, op in ops.items()
    )
    schemas = html.escape(json.dumps(document["components"]["schemas"], indent=2))
    title = html.escape(document["info"]["title"])
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{title}</title></head><body>"
        f"<h1>{title}</h1><p>OpenAPI document: <a href='/openapi.json'>/openapi.json</a></p><ul>{rows}</ul>"
        f"<h2>Schemas</h2><pre>{schemas}</pre></body></html>"
    )
