"""The suite runs against a live infq deployment: ``INFQ_URL`` and
``INFQ_API_KEY`` (``tests/python_client.rs`` starts one and sets them),
plus ``INFQ_TEST_SLOW_KEY`` (a tenant with a tiny rate) and
``INFQ_TEST_WEBHOOK_SECRET`` (the deployment's webhook secret)."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

import infq


def need(name: str) -> str:
    value = os.environ.get(name)
    if not value:
        pytest.fail(f"{name} is not set: run through tests/python_client.rs")
    return value


@pytest.fixture(scope="session")
def url() -> str:
    return need("INFQ_URL")


@pytest.fixture()
def client(url: str) -> Iterator[infq.Client]:
    with infq.Client(url, need("INFQ_API_KEY")) as c:
        yield c
