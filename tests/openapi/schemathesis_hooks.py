"""Schemathesis hooks for the contract test in tests/openapi.rs.

An upload's file must name the chosen model's features and the
passthrough columns the query asks for, in the format the query or the
media type says: a relation between the query and the body that a JSON
Schema cannot state. For every positive case of `POST /v1/batches` this
hook writes such a file (a few rows of values within each feature's
bounds), so the server's answer to the rest of the request is what is
tested. Negative cases keep the body the tool made.
"""

from __future__ import annotations

import csv
import io
import json
import os
import random
import urllib.request
import uuid
import zlib
from typing import Any

import schemathesis
from hypothesis import strategies as st

# The whitespace Rust's `str::trim` removes.
_WHITESPACE = "\t\n\x0b\x0c\r \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000"

# Bodies of the other media types are made by `map_case` below; these only
# let the tool send them.
schemathesis.openapi.media_type("application/x-ndjson", st.just(b"{}\n"))
schemathesis.openapi.media_type(
    "application/vnd.apache.parquet", st.just(b"PAR1")
)  # sent as CSV below


def _models() -> dict[str, dict[str, Any]]:
    request = urllib.request.Request(
        os.environ["INFQ_URL"].rstrip("/") + "/v1/models",
        headers={"Authorization": f"Bearer {os.environ['INFQ_API_KEY']}"},
    )
    with urllib.request.urlopen(request, timeout=10) as r:
        listed = json.load(r)["models"]
    by_address: dict[str, dict[str, Any]] = {}
    for m in listed:
        by_address[f"{m['name']}@{m['version']}"] = m
        if m["default"]:
            by_address[m["name"]] = m
    return by_address


MODELS = _models()


def _value(feature: dict[str, Any], rng: random.Random) -> float | str:
    if feature["categories"]:
        return rng.choice(list(feature["categories"]))
    lo = feature["min"] if feature["min"] is not None else -1000.0
    hi = feature["max"] if feature["max"] is not None else lo + 1000.0
    return round(rng.uniform(lo, hi), 3)


def _size(feature: dict[str, Any]) -> int:
    size = 1
    for d in feature["shape"]:
        size *= d
    return size


def _file(
    model: dict[str, Any], fmt: str, delimiter: str, passthrough: list[str], seed: int
) -> str:
    """A few rows for `model`: CSV (a tensor feature's values as `name[k]`)
    or JSON Lines (named features, tensors flat), with the passthrough
    columns."""
    rng = random.Random(seed)
    features = model["inputs"]
    names = [f["name"] for f in features]
    extra = [p for p in passthrough if p not in names]
    rows = []
    for i in range(rng.randint(1, 5)):
        row: dict[str, Any] = {}
        for f in features:
            values = [_value(f, rng) for _ in range(_size(f))]
            row[f["name"]] = values if f["shape"] else values[0]
        row.update({p: f"v{i}" for p in extra})
        rows.append(row)
    if fmt == "jsonl":
        return "".join(json.dumps(r) + "\n" for r in rows)
    header: list[str] = []
    for f in features:
        header += (
            [f"{f['name']}[{k}]" for k in range(_size(f))]
            if f["shape"]
            else [f["name"]]
        )
    out = io.StringIO()
    writer = csv.writer(out, delimiter=delimiter, lineterminator="\n")
    writer.writerow(header + extra)
    for r in rows:
        cells: list[Any] = []
        for f in features:
            cells += r[f["name"]] if f["shape"] else [r[f["name"]]]
        writer.writerow(cells + [r[p] for p in extra])
    return out.getvalue()


@schemathesis.hook
def map_case(context: Any, case: Any) -> Any:
    meta = case.meta
    if (
        case.operation.method.upper() != "POST"
        or meta is None
        or not meta.generation.mode.is_positive
    ):
        return case
    # An idempotency key names one request: a key used again with another
    # body is rightly refused (409), so each positive case gets its own
    # and the body is what is tested.
    headers = case.headers or {}
    if "Idempotency-Key" in headers:
        headers["Idempotency-Key"] = uuid.uuid4().hex
    if case.operation.path != "/v1/batches":
        return case
    query = case.query or {}
    model = MODELS.get(str(query.get("model")))
    if model is None:
        return case
    fmt = query.get("format") or {
        "application/x-ndjson": "jsonl",
        "application/vnd.apache.parquet": "parquet",
    }.get(case.media_type or "", "csv")
    fmt = "jsonl" if fmt == "ndjson" else fmt
    if fmt == "parquet":
        # The tool takes a body of bytes for one that breaks its schema, so
        # Parquet goes as CSV here; tests/parquet.rs covers Parquet uploads.
        fmt = "csv"
        case.media_type = "text/csv"
        if query.get("format") is not None:
            query["format"] = "csv"
            case.query = query
    delimiter = {None: ",", "tab": "\t", "\\t": "\t"}.get(
        query.get("delimiter"), query.get("delimiter") or ","
    )
    passthrough = query.get("passthrough") or []
    if isinstance(passthrough, str):
        passthrough = passthrough.split(",")
    passthrough = [p.strip(_WHITESPACE) for p in passthrough]
    # Progress events go to the batch's webhook: asking for them needs one.
    if (
        query.get("progress") or query.get("progress_interval_secs") is not None
    ) and not query.get("webhook_url"):
        query["webhook_url"] = "https://hooks.contract.invalid/infq"
        case.query = query
    seed = zlib.crc32(json.dumps(query, sort_keys=True, default=str).encode())
    case.body = _file(model, fmt, delimiter, passthrough, seed)
    return case
