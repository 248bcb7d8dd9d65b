"""What every server worker needs to build its scorer (:class:`ServeSettings`), validated by pydantic and
handed from ``aptrank serve`` to the worker processes as JSON in one environment variable
(:data:`SETTINGS_ENV`): the workers are fresh interpreters started by the HTTP server, which calls
:func:`serving.app.app_from_env` in each."""

from __future__ import annotations

import os

from pydantic import BaseModel, ConfigDict, Field, ValidationError

SETTINGS_ENV = "APTRANK_SERVE_SETTINGS"


class ServeSettings(BaseModel):
    """The model, its fusion weights, request limits, and how many workers the server started
    (readiness counts them)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    model: str = Field(description="ONNX file or models:/NAME@ALIAS")
    features: str | None = None
    tracking_uri: str | None = None
    weights: dict[str, float] = Field(default_factory=dict)
    threads: int = Field(1, ge=1, description="onnxruntime intra-op threads per call")
    poll_seconds: float = Field(30.0, ge=0, description="model URI polling period (0: never)")
    max_candidates: int = Field(1000, ge=1)
    max_body_bytes: int = Field(1 << 20, ge=1)
    body_timeout_s: float = Field(5.0, gt=0, description="seconds for a request body to arrive (408 after)")
    workers: int = Field(1, ge=1, description="worker processes the server was started with (readiness)")
    allow_unverified_model: bool = Field(False, description="load a model without a SHA-256 (logged warning)")

    def to_env(self) -> dict[str, str]:
        return {SETTINGS_ENV: self.model_dump_json()}

    @classmethod
    def from_env(cls) -> ServeSettings:
        raw = os.environ.get(SETTINGS_ENV)
        if raw is None:
            raise RuntimeError(f"{SETTINGS_ENV} is not set: start the server with `aptrank serve`")
        try:
            return cls.model_validate_json(raw)
        except ValidationError as e:
            raise RuntimeError(f"{SETTINGS_ENV}: {e}") from e
