"""A batch's progress bar, when tqdm is installed."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

from .types import Batch


@contextmanager
def bar(batch: Batch, wanted: bool) -> Iterator[Callable[[Batch], None]]:
    """Yields a function that shows a batch's newest state."""
    try:
        if not wanted:
            raise ImportError
        from tqdm.auto import tqdm
    except ImportError:
        yield lambda _b: None
        return
    t = tqdm(total=batch.total, unit="rows", desc=f"batch {batch.id[:8]}")
    t.update(batch.processed)
    try:
        yield lambda b: t.update(b.processed - t.n)
    finally:
        t.close()
