"""The client's types name exactly the fields of the server's schemas."""

from __future__ import annotations

import dataclasses

import httpx
import pytest

import infq


@pytest.mark.parametrize(
    ("cls", "schema"),
    [
        (infq.Job, "Job"),
        (infq.Batch, "Batch"),
        (infq.Model, "ModelVersion"),
        (infq.Feature, "Feature"),
        (infq.Output, "Output"),
    ],
)
def test_types_match_the_openapi_document(url: str, cls: type, schema: str) -> None:
    doc = httpx.get(f"{url}/openapi.json").json()
    props = doc["components"]["schemas"][schema]["properties"]
    fields = {f.name for f in dataclasses.fields(cls)} - {"extra"}
    assert fields == set(props), (
        f"only the client has {fields - set(props)}; only the server has {set(props) - fields}"
    )
    required = set(doc["components"]["schemas"][schema].get("required", []))
    optional = {
        f.name
        for f in dataclasses.fields(cls)
        if f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING
    }
    # A field the server may leave out must have a default here.
    assert set(props) - required <= optional


def test_events_match_the_openapi_webhooks(url: str) -> None:
    doc = httpx.get(f"{url}/openapi.json").json()
    assert set(doc["webhooks"]) == set(infq.EVENT_TYPES)
    fields = {f.name for f in dataclasses.fields(infq.Event)}
    for kind, item in doc["webhooks"].items():
        ref = item["post"]["requestBody"]["content"]["application/json"]["schema"]["$ref"]
        schema = doc["components"]["schemas"][ref.rsplit("/", 1)[1]]
        # The body's fields; `id` is the webhook-id header, and `sequence`
        # is read from a progress event's data.
        assert set(schema["properties"]) <= fields, kind
        assert fields - set(schema["properties"]) == {"id", "sequence"}, kind
        data = schema["properties"]["data"]
        target = data.get("$ref") or data["allOf"][0]["$ref"]
        assert target.endswith("/Job" if kind.startswith("job.") else "/Batch"), kind
