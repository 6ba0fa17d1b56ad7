"""infq's Python client: jobs, bulk batches and webhooks of an infq
deployment, sync (:class:`Client`) and async (:class:`AsyncClient`)."""

from . import errors, webhooks
from .aio import AsyncClient
from .client import Client
from .errors import (
    Conflict,
    Forbidden,
    InfqError,
    InvalidRequest,
    NotFound,
    RateLimited,
    Unauthorized,
    Unavailable,
)
from .frames import score
from .types import EVENT_TYPES, Batch, Event, Feature, Job, JobError, Model, Output

__all__ = [
    "EVENT_TYPES",
    "AsyncClient",
    "Batch",
    "Client",
    "Conflict",
    "Event",
    "Feature",
    "Forbidden",
    "InfqError",
    "InvalidRequest",
    "Job",
    "JobError",
    "Model",
    "NotFound",
    "Output",
    "RateLimited",
    "Unauthorized",
    "Unavailable",
    "errors",
    "score",
    "webhooks",
]
__version__ = "0.1.0"
