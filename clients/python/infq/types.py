"""What the API answers with, as typed values.

Each type names every field the server's OpenAPI document gives its schema
(``Job``, ``Batch``); the package's tests compare them with
``/openapi.json`` of a live server, so a field the server adds or renames
fails a test, not a user. Unknown fields a newer server sends are kept in
``extra`` rather than refused.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any, Protocol, TypeVar


class _Typed(Protocol):
    def __init__(self, **kw: Any) -> None: ...


T = TypeVar("T", bound=_Typed)

TERMINAL = frozenset({"succeeded", "failed", "cancelled", "expired"})


def _build(cls: type[T], data: dict[str, Any]) -> T:
    known = {f.name for f in fields(cls)}  # type: ignore[arg-type]
    kw = {k: v for k, v in data.items() if k in known and k != "extra"}
    extra = {k: v for k, v in data.items() if k not in known}
    return cls(**kw, extra=extra)


@dataclass(frozen=True)
class JobError:
    """Why a job failed: ``code`` (``model_error``, ``expired``, ...) and
    ``message``."""

    code: str
    message: str


def _with_error(data: dict[str, Any]) -> dict[str, Any]:
    """``data`` with its ``error`` object (if any) as a :class:`JobError`."""
    err = data.get("error")
    if not isinstance(err, dict):
        return data
    code, message = str(err.get("code", "")), str(err.get("message", ""))
    return {**data, "error": JobError(code=code, message=message)}


@dataclass(frozen=True)
class Job:
    """A single job as ``GET /v1/jobs/{id}`` shows it."""

    id: str
    status: str
    model: str
    version: str
    priority: str
    created_at: str
    attempts: int = 0
    output: dict[str, Any] | None = None
    explanation: dict[str, Any] | None = None
    model_sha256: str | None = None
    error: JobError | None = None
    finished_at: str | None = None
    metadata: dict[str, Any] | None = None
    webhook_url: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def done(self) -> bool:
        """Whether it has reached a terminal state."""
        return self.status in TERMINAL

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Job:
        return _build(cls, _with_error(data))


@dataclass(frozen=True)
class Batch:
    """A bulk batch as ``GET /v1/batches/{id}`` shows it."""

    id: str
    status: str
    model: str
    version: str
    total: int
    succeeded: int
    failed: int
    chunks: int
    chunks_done: int
    created_at: str
    results: str
    explain: bool
    rows_per_second: float | None = None
    eta_seconds: float | None = None
    started_at: str | None = None
    finished_at: str | None = None
    error: JobError | None = None
    passthrough: list[str] = field(default_factory=list)
    model_sha256: str | None = None
    registry_sha256: str | None = None
    infq_version: str | None = None
    webhook_url: str | None = None
    progress_interval_secs: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def done(self) -> bool:
        """Whether it has reached a terminal state."""
        return self.status in TERMINAL

    @property
    def processed(self) -> int:
        """Rows with an output or an error so far."""
        return self.succeeded + self.failed

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Batch:
        return _build(cls, _with_error(data))


@dataclass(frozen=True)
class Feature:
    """One input feature of a model: its name, shape (empty for a number),
    accepted range and, for a categorical one, its names and codes."""

    name: str
    dtype: str
    shape: list[int]
    description: str
    categories: dict[str, float]
    min: float | None = None
    max: float | None = None
    reason: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Output:
    """One output column of a model."""

    name: str
    description: str
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Model:
    """A model version as ``GET /v1/models`` shows it."""

    name: str
    version: str
    default: bool
    description: str
    inputs: list[Feature]
    outputs: list[Output]
    width: int
    max_batch_size: int
    max_batch_delay_ms: int
    device: str
    instances: int
    precision: str
    explain: dict[str, Any] | None = None
    sha256: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Model:
        data = dict(data)
        data["inputs"] = [_build(Feature, f) for f in data.get("inputs", [])]
        data["outputs"] = [_build(Output, o) for o in data.get("outputs", [])]
        return _build(cls, data)


#: Every event type a deployment sends (its OpenAPI document's ``webhooks``).
EVENT_TYPES = ("job.succeeded", "job.failed", "batch.completed", "batch.progress")


@dataclass(frozen=True)
class Event:
    """A verified webhook event: ``type`` (``job.succeeded``, ``job.failed``,
    ``batch.completed``, ``batch.progress``), its ``webhook-id``, when it was
    built, and its subject: a :class:`Job` or a :class:`Batch`."""

    id: str
    type: str
    timestamp: str
    data: Job | Batch
    sequence: int | None = None
