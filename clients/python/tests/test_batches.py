from __future__ import annotations

import io
from pathlib import Path

import pytest

import infq

CSV = "loan_id,student,balance,income\n" + "".join(
    f"L-{i},{'Yes' if i % 2 else 'No'},{i * 3}.5,{10000 + i * 50}\n" for i in range(2000)
)


def test_a_batch_from_bytes_a_path_and_a_file(client: infq.Client, tmp_path: Path) -> None:
    path = tmp_path / "book.csv"
    path.write_text(CSV)
    batches = [
        client.batches.create(CSV.encode(), "credit-default", passthrough=["loan_id"]),
        client.batches.create(path, "credit-default", passthrough="loan_id"),
        client.batches.create(io.BytesIO(CSV.encode()), "credit-default", passthrough=["loan_id"]),
    ]
    results = []
    for b in batches:
        assert b.total == 2000 and b.passthrough == ["loan_id"]
        done = client.batches.wait(b.id, timeout=60, progress=False)
        assert (done.status, done.succeeded, done.failed) == ("succeeded", 2000, 0)
        rows = client.batches.results(b.id)
        assert rows is not None and [r["row"] for r in rows] == list(range(1, 2001))
        assert rows[7]["loan_id"] == "L-7"
        results.append([r["output"] for r in rows])
    assert results[0] == results[1] == results[2]


def test_results_stream_to_files_in_every_format(client: infq.Client, tmp_path: Path) -> None:
    b = client.batches.create(CSV.encode(), "credit-default", passthrough=["loan_id"])
    client.batches.wait(b.id, timeout=60, progress=False)
    out = tmp_path / "r.csv"
    assert client.batches.results(b.id, format="csv", out=out) is None
    lines = out.read_text().splitlines()
    assert lines[0].startswith("row,loan_id,") and len(lines) == 2001
    pq = pytest.importorskip("pyarrow.parquet")
    buf = io.BytesIO()
    client.batches.results(b.id, format="parquet", out=buf)
    buf.seek(0)
    table = pq.read_table(buf)
    assert table.num_rows == 2000
    assert table.column("loan_id").to_pylist()[:2] == ["L-0", "L-1"]


def test_partial_results_cancel_and_delete(client: infq.Client) -> None:
    b = client.batches.create(CSV.encode(), "credit-default")
    partial = client.batches.results(b.id, partial=True)
    assert partial is not None and len(partial) <= 2000
    try:
        client.batches.cancel(b.id)
    except infq.Conflict:
        pass  # it ran first
    end = client.batches.wait(b.id, timeout=60, progress=False)
    assert end.done
    client.batches.delete(b.id)
    with pytest.raises(infq.NotFound):
        client.batches.get(b.id)


def test_a_bad_file_is_refused_with_its_lines(client: infq.Client) -> None:
    bad = "student,balance,income\nNo,12,13\nmaybe,x,1\n"
    with pytest.raises(infq.InvalidRequest) as e:
        client.batches.create(bad.encode(), "credit-default")
    assert e.value.code == "invalid_file"
    assert any(d.line == 3 for d in e.value.details), e.value.details
    with pytest.raises(infq.InvalidRequest) as e:
        client.batches.create(CSV.encode(), "credit-default", passthrough=["nope"])
    assert any(d.field == "nope" and d.line == 1 for d in e.value.details), e.value.details
