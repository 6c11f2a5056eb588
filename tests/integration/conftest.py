"""Fixtures shared by integration tests: real ``redis-server`` processes, and the web tests' pieces.

Servers are session-scoped (starting a cluster costs about a second); tests isolate themselves with a
unique key namespace instead of flushing. Tests that kill a server get their own, per test. The
frameworks' blocking test clients (and the sync facade) take a ``backend`` name rather than running
on anyio's, and need identity providers on a loop of their own thread (``idps``).
"""

from __future__ import annotations

import gc
import uuid
from collections.abc import Iterator

import pytest
from tests.web_helpers import IdpThread, threaded_idps

from jwks_cache.testing import LocalIdentityProvider
from redis_servers import RedisClusterProcess, RedisServerProcess, find_redis_binaries


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServerProcess]:
    """A standalone server shared by the session; never kill it in a test."""
    find_redis_binaries()
    server = RedisServerProcess(tmp_path_factory.mktemp("redis-standalone"))
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisClusterProcess]:
    """Three masters with every slot assigned, shared by the session."""
    find_redis_binaries()
    cluster = RedisClusterProcess(tmp_path_factory.mktemp("redis-cluster"))
    cluster.start()
    yield cluster
    cluster.stop()


@pytest.fixture
def disposable_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServerProcess]:
    """A standalone server of this test alone, free to kill and restart on the same port.

    Tests using it take Redis down: mark them ``@coredis_outage`` (see ``redis_servers``).
    """
    find_redis_binaries()
    server = RedisServerProcess(tmp_path_factory.mktemp("redis-disposable"))
    server.start()
    yield server
    server.stop()
    gc.collect()  # while the test's warning filter still applies


@pytest.fixture
def disposable_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisClusterProcess]:
    """A 3-master cluster of this test alone, free to kill or pause a master (mark ``@coredis_outage``)."""
    find_redis_binaries()
    cluster = RedisClusterProcess(tmp_path_factory.mktemp("redis-disposable-cluster"))
    cluster.start()
    yield cluster
    cluster.stop()
    gc.collect()  # while the test's warning filter still applies


@pytest.fixture
def redis_namespace() -> str:
    """A key namespace no other test uses, so session servers need no flushing."""
    return f"test-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def namespace(redis_namespace: str) -> str:
    """Alias of ``redis_namespace`` (both names are in use)."""
    return redis_namespace


@pytest.fixture(params=["asyncio", "trio"])
def backend(request: pytest.FixtureRequest) -> str:
    return request.param  # type: ignore[no-any-return]


@pytest.fixture
def idp_thread() -> Iterator[IdpThread]:
    with threaded_idps(2) as thread:
        yield thread


@pytest.fixture
def idps(idp_thread: IdpThread) -> list[LocalIdentityProvider]:
    return idp_thread.idps
