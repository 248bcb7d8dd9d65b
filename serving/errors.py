"""Errors of the serving package; each message names the file, URI, column or field and the rule."""

from __future__ import annotations


class ServingError(RuntimeError):
    """Base class: a scoring or serving step cannot go on."""


class ModelLoadError(ServingError):
    """A model file or URI cannot be resolved, read, or lacks the metadata a scorer needs."""


class TrackingUnreachableError(ModelLoadError):
    """The MLflow tracking/registry server does not answer (connection refused, DNS, timeout)."""


class CandidateError(ServingError):
    """Candidate rows miss a column or carry values the scorer cannot read."""
