"""DataFrame in, DataFrame out: :func:`score`, the one call most users
need. Needs the ``pandas`` extra (pandas and pyarrow)."""

from __future__ import annotations

import os
import tempfile
from typing import TYPE_CHECKING, Any

from .client import Client

if TYPE_CHECKING:
    import pandas as pd

#: Columns of a results file that say how a row was run, not what it
#: scored: left out of what :func:`score` returns.
_LINEAGE = ("row", "model", "version", "model_sha256")


def score(
    df: pd.DataFrame,
    model: str,
    *,
    id_column: str | None = None,
    explain: bool = False,
    progress: bool = True,
    client: Client | None = None,
    timeout: float | None = None,
) -> pd.DataFrame:
    """Scores every row of ``df`` with ``model`` as one bulk batch and
    returns ``df`` with the outputs (and, with ``explain``, the reasons and
    attributions) as new columns: same index, same order.

    The frame is written to a temporary Parquet file (only the columns the
    model reads are used by the server; the index is not sent) and streamed
    up; the results come back as Parquet, also through a temporary file, so
    the data is never held twice in memory as text. A server that refuses
    Parquet gets CSV instead, the same way. ``id_column``, if given,
    travels with each row and is checked against the caller's on return.
    Raises :class:`~infq.errors.InvalidRequest` naming the rows and columns
    the server refused, and ``TimeoutError`` after ``timeout`` seconds.
    """
    import pandas as pd
    import pyarrow as pa
    import pyarrow.parquet as pq

    from .errors import InfqError, InvalidRequest

    own = client is None
    c = client or Client()
    passthrough = [id_column] if id_column else None
    try:
        with tempfile.TemporaryDirectory(prefix="infq-score-") as tmp:
            fmt = "parquet"
            upload = os.path.join(tmp, "rows.parquet")
            pq.write_table(pa.Table.from_pandas(df, preserve_index=False), upload)
            try:
                batch = c.batches.create(
                    upload, model, format=fmt, passthrough=passthrough, explain=explain
                )
            except InvalidRequest as e:
                # A server that does not take Parquet gets CSV, written
                # straight to a file.
                if not _refuses_format(e):
                    raise
                fmt = "csv"
                upload = os.path.join(tmp, "rows.csv")
                df.to_csv(upload, index=False)
                batch = c.batches.create(
                    upload, model, format=fmt, passthrough=passthrough, explain=explain
                )
            done = c.batches.wait(batch.id, timeout=timeout, progress=progress)
            if done.status != "succeeded":
                raise InfqError(
                    f"batch {done.id} ended {done.status}"
                    + (f": {done.error.message}" if done.error else "")
                )
            results = os.path.join(tmp, f"results.{fmt}")
            c.batches.results(batch.id, format=fmt, out=results)
            if fmt == "parquet":
                out = pq.read_table(results).to_pandas()
            else:
                dtypes = {id_column: str} if id_column else None
                out = pd.read_csv(results, dtype=dtypes, keep_default_na=False, na_values=[""])
    finally:
        if own:
            c.close()
    if len(out) != len(df) or not (out["row"].to_numpy() == range(1, len(df) + 1)).all():
        raise RuntimeError("the results do not have one row per input row, in order")
    if id_column:
        theirs = df[id_column].astype(str).to_numpy()
        if not (out[id_column].to_numpy() == theirs).all():
            raise RuntimeError(f"the results' {id_column} do not match the input's")
    keep = [c for c in out.columns if c not in _LINEAGE and c != id_column]
    if "error" in keep and out["error"].isna().all():
        keep.remove("error")
    clash = [c for c in keep if c in df.columns]
    if clash:
        raise ValueError(f"the results' columns {clash} are columns of the input too")
    scored: Any = out[keep]
    scored.index = df.index
    return pd.concat([df, scored], axis=1)


def _refuses_format(e: Exception) -> bool:
    """Whether a refusal is of the file's format (a server without Parquet)."""
    details = getattr(e, "details", ())
    return any(getattr(d, "field", None) == "format" for d in details)
