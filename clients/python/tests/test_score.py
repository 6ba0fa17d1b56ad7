from __future__ import annotations

import os

import httpx
import pytest

import infq

pd = pytest.importorskip("pandas")
torch = pytest.importorskip("torch")


def test_score_100k_default_rows_matches_the_model_run_in_torch(client: infq.Client) -> None:
    """Default.csv as it ships (``student`` as Yes/No), ten times over with
    an id per row, under a shuffled index: the scores come back on the
    caller's rows, in order, equal to the model's own."""
    base = pd.read_csv(os.environ["INFQ_TEST_DEFAULT_CSV"])
    df = pd.concat([base] * 10, ignore_index=True)
    df["loan_id"] = [f"L-{i}" for i in range(len(df))]
    df.index = pd.Index(range(len(df), 0, -1), name="position")
    assert len(df) == 100_000

    scored = infq.score(df, "credit-default", id_column="loan_id", progress=False, client=client)

    assert list(scored.index) == list(df.index)
    assert list(scored["loan_id"]) == list(df["loan_id"])
    assert list(scored.columns) == [*df.columns, "default_probability"]
    model = torch.jit.load(os.environ["INFQ_TEST_MODEL_FILE"])
    x = torch.tensor(
        list(
            zip(
                (df["student"] == "Yes").astype("float32"),
                df["balance"].astype("float32"),
                df["income"].astype("float32"),
                strict=True,
            )
        ),
        dtype=torch.float32,
    )
    with torch.no_grad():
        want = model(x).reshape(-1).numpy()
    got = scored["default_probability"].to_numpy()
    assert abs(got - want).max() <= 1e-5


def test_score_with_reasons_and_a_refused_frame(client: infq.Client) -> None:
    df = pd.DataFrame(
        {
            "student": ["No", "Yes", "No"],
            "balance": [0.0, 2500.0, 1800.0],
            "income": [40e3, 9e3, 2e4],
        }
    )
    scored = infq.score(df, "credit-default", explain=True, progress=False, client=client)
    assert "reason_1" in scored.columns and "attribution_balance" in scored.columns
    assert scored.loc[1, "reason_1"] == "Credit card balance is high"
    bad = df.assign(student=["No", "maybe", "No"])
    with pytest.raises(infq.InvalidRequest) as e:
        infq.score(bad, "credit-default", progress=False, client=client)
    assert any("maybe" in d.message for d in e.value.details), e.value.details


class _NoParquet(httpx.BaseTransport):
    """The real server behind a door that refuses Parquet, as a server
    without it would: `422` naming `format`."""

    def __init__(self) -> None:
        self.inner = httpx.HTTPTransport()
        self.refused = 0

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if request.url.params.get("format") == "parquet":
            self.refused += 1
            detail = {"field": "format", "line": None, "message": "use csv or jsonl"}
            body = {"error": {"code": "invalid_request", "message": "invalid", "details": [detail]}}
            return httpx.Response(422, json=body)
        return self.inner.handle_request(request)


def test_score_sends_csv_to_a_server_without_parquet(url: str, client: infq.Client) -> None:
    df = pd.DataFrame(
        {
            "student": ["Yes", "No"] * 50,
            "balance": [float(100 * i) for i in range(100)],
            "income": [20_000.0 + 10 * i for i in range(100)],
            "loan_id": [f"007-{i}" for i in range(100)],
        }
    )
    door = _NoParquet()
    key = os.environ["INFQ_API_KEY"]
    http = httpx.Client(
        base_url=url, headers={"Authorization": f"Bearer {key}"}, transport=door, timeout=60
    )
    with infq.Client(url, key, http=http) as old:
        via_csv = infq.score(df, "credit-default", id_column="loan_id", progress=False, client=old)
    via_parquet = infq.score(
        df, "credit-default", id_column="loan_id", progress=False, client=client
    )
    assert door.refused == 1
    assert list(via_csv["loan_id"]) == list(df["loan_id"])  # ids kept as text
    diff = (via_csv["default_probability"] - via_parquet["default_probability"]).abs().max()
    assert diff < 1e-6
