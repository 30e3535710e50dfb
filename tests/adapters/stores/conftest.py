"""Fixtures for the store tests: one session-wide redis-server and Redis Cluster, and stores of every kind.

`store` is parametrised over the adapters, so every test that takes it is a contract test run
against each. `make_store` builds more instances on the *same* backend (the same SQLite file,
the same Redis and prefix): a second gateway process, as far as the store can tell. "redis-cluster"
is the Redis store on a real three-primary cluster (`tests.redis_server.redis_cluster`).
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from adapters.stores.memory_store import MemoryStore
from adapters.stores.redis_store import RedisStore
from adapters.stores.sqlite_store import SqliteStore
from tests.redis_server import Cluster, redis_cluster, redis_server

ADAPTERS = ["memory", "sqlite", "redis", "redis-cluster"]
AnyStore = MemoryStore | SqliteStore | RedisStore


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    with redis_server() as url:
        yield url


@pytest.fixture(scope="session")
def cluster() -> Iterator[Cluster]:
    with redis_cluster() as running:
        yield running


@pytest.fixture(params=ADAPTERS)
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
async def make_store(kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> AsyncIterator[Callable[..., Any]]:
    made: list[AnyStore] = []
    prefix = f"t{uuid.uuid4().hex[:10]}:"  # each test its own keyspace on the shared server
    url = (request.getfixturevalue("redis_url") if kind == "redis" else
           request.getfixturevalue("cluster").url if kind == "redis-cluster" else "")

    def make(**kwargs: Any) -> AnyStore:
        s: AnyStore
        if kind == "memory":
            if made:
                pytest.skip("the memory store is private to one instance")
            s = MemoryStore()
        elif kind == "sqlite":
            s = SqliteStore(tmp_path / "state.sqlite", **kwargs)
        else:
            s = RedisStore(url, prefix=prefix, **kwargs)
        made.append(s)
        return s

    yield make
    for s in made:
        await s.aclose()


@pytest.fixture
async def store(make_store: Callable[..., Any]) -> AsyncIterator[Any]:
    s = make_store()
    await s.start()
    yield s
