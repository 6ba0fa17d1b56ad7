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
    the data is never held twice in memory as text. ``id_column``, if given,
    travels with each row and is checked against the caller's on return.
    Raises :class:`~infq.errors.InvalidRequest` naming the rows and columns
    the server refused, and ``TimeoutError`` after ``timeout`` seconds.
    """
    import pandas as pd
    import pyarrow as pa
    import pyarrow.parquet as pq

    own = client is None
    c = client or Client()
    try:
        with tempfile.TemporaryDirectory(prefix="infq-score-") as tmp:
            upload = os.path.join(tmp, "rows.parquet")
            pq.write_table(pa.Table.from_pandas(df, preserve_index=False), upload)
            batch = c.batches.create(
                upload,
                model,
                format="parquet",
                passthrough=[id_column] if id_column else None,
                explain=explain,
            )
            done = c.batches.wait(batch.id, timeout=timeout, progress=progress)
            if done.status != "succeeded":
                from .errors import InfqError

                raise InfqError(
                    f"batch {done.id} ended {done.status}"
                    + (f": {done.error.message}" if done.error else "")
                )
            results = os.path.join(tmp, "results.parquet")
            c.batches.results(batch.id, format="parquet", out=results)
            out = pq.read_table(results).to_pandas()
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
