"""The control-plane ASGI app in-process against a Registry serving a LocalIdentityProvider.

Every response a test produces through :func:`control_plane` is checked on exit against the app's
own ``/openapi.json``: its status code and content type (and body shape) must be documented for
that operation, so the document cannot drift from the behaviour.
"""

from __future__ import annotations

import base64
import hashlib
import re
import socket
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import httpx
import msgspec
import pytest
from tests.helpers import PROVIDER, TENANT, config_for, eventually, loopback_registry

from jwks_cache import ConfigError, ProviderState, ProviderStatus, Registry
from jwks_cache._asgi._plumbing import Problem, ValidationProblem
from jwks_cache._asgi._routes import ROUTES, Health
from jwks_cache._cli._serve import load_serve_config, open_registry
from jwks_cache.asgi import create_app
from jwks_cache.testing import LocalIdentityProvider, VirtualClock

TOKEN = "tok-" + "x" * 28
ADMIN = {"authorization": f"Bearer {TOKEN}"}
BASE = f"/tenants/{TENANT}/providers/{PROVIDER}"
PROBLEM = "application/problem+json"
_TYPES: dict[str, Any] = {
    "ProviderStatus": ProviderStatus,
    "Problem": Problem,
    "ValidationProblem": ValidationProblem,
    "Health": Health,
}


# -- harness: a recording middleware and the documented-response property ---------------------------


@dataclass
class Seen:
    method: str
    path: str
    status: int
    headers: dict[str, str]
    body: bytes


@dataclass
class Recorder:
    """ASGI middleware remembering every HTTP exchange, for the OpenAPI property."""

    app: Any
    seen: list[Seen] = field(default_factory=list)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start: dict[str, Any] = {}
        body = bytearray()

        async def capture(message: Any) -> None:
            if message["type"] == "http.response.start":
                start.update(message)
            elif message["type"] == "http.response.body":
                body.extend(message.get("body", b""))
            await send(message)

        await self.app(scope, receive, capture)
        if start:
            headers = {k.decode().lower(): v.decode() for k, v in start["headers"]}
            path = scope["path"].removeprefix(scope.get("root_path", ""))
            self.seen.append(Seen(scope["method"], path, start["status"], headers, bytes(body)))


def _template_regex(template: str) -> re.Pattern[str]:
    return re.compile("^" + re.sub(r"\\\{[a-z]+\\\}", "[^/]+", re.escape(template)) + "$")


def assert_documented(document: dict[str, Any], seen: Sequence[Seen]) -> None:
    """Every produced status and content type appears in the document for that operation."""
    assert seen, "the test produced no response"
    paths = document["paths"]
    for exchange in seen:
        where = f"{exchange.method} {exchange.path} -> {exchange.status}"
        content_type = exchange.headers.get("content-type")
        item = next((v for k, v in paths.items() if _template_regex(k).match(exchange.path)), None)
        # the description promises HEAD for every GET operation: its GET response without a body
        method = "get" if exchange.method == "HEAD" and item is not None and "get" in item else exchange.method.lower()
        if item is None or method not in item:
            # undocumentable by OpenAPI; the document's description promises exactly these two
            assert exchange.status == (404 if item is None else 405), where
            assert content_type == PROBLEM, where
            if item is not None:
                methods = {m.upper() for m in item} | ({"HEAD"} if "get" in item else set())
                assert exchange.headers["allow"] == ", ".join(sorted(methods)), where
            continue
        if exchange.method == "HEAD":
            assert exchange.body == b"", where
        responses = item[method]["responses"]
        assert str(exchange.status) in responses, f"{where}: status not documented"
        response = responses[str(exchange.status)]
        if "content" not in response:
            assert not exchange.body and content_type is None, where
            continue
        assert content_type in response["content"], f"{where}: {content_type} not documented"
        for name in response.get("headers", {}):
            if name in ("ETag", "Cache-Control", "WWW-Authenticate", "Location"):
                assert name.lower() in exchange.headers, f"{where}: {name} missing"
        if exchange.method != "HEAD":
            _check_body(response["content"][content_type]["schema"], exchange.body, where)


def _check_body(schema: dict[str, Any], body: bytes, where: str) -> None:
    ref = schema.get("$ref") or schema.get("items", {}).get("$ref", "")
    name = ref.rsplit("/", 1)[-1]
    if name in _TYPES:
        kind = list[_TYPES[name]] if "items" in schema else _TYPES[name]  # type: ignore[valid-type]
        msgspec.json.decode(body, type=kind)
    elif name == "JWKS":
        keys = msgspec.json.decode(body)["keys"]
        assert all({"d", "p", "q", "k"}.isdisjoint(key) for key in keys), where
    else:
        assert isinstance(msgspec.json.decode(body), dict), where


@asynccontextmanager
async def control_plane(
    registry: Registry, *, root_path: str = "", client_headers: dict[str, str] | None = None, **settings: Any
) -> AsyncIterator[httpx.AsyncClient]:
    """A client of ``create_app(registry, **settings)``; on exit, the OpenAPI property is checked.

    ``client_headers`` go with every request (``ADMIN``: a reader holding the token).
    """
    recorder = Recorder(create_app(registry, **settings))
    transport = httpx.ASGITransport(app=recorder, root_path=root_path)
    base_url = "http://control-plane" + root_path
    async with httpx.AsyncClient(transport=transport, base_url=base_url, headers=client_headers) as client:
        yield client
        document = msgspec.json.decode(await _raw_openapi(recorder.app))
    assert_documented(document, recorder.seen)


async def _raw_openapi(app: Any) -> bytes:
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app({"type": "http", "method": "GET", "path": "/openapi.json", "headers": []}, receive, send)
    return bytes(sent[1]["body"])


@asynccontextmanager
async def admin_stack(
    clock: VirtualClock | None = None,
) -> AsyncIterator[tuple[LocalIdentityProvider, Registry, httpx.AsyncClient]]:
    """An identity provider, a loopback Registry and an admin client of its control plane.

    Reads are protected (the default): the client shows the token on every request.
    """
    async with (
        LocalIdentityProvider() as idp,
        loopback_registry(clock) as reg,
        control_plane(reg, admin_token=TOKEN, client_headers=ADMIN) as client,
    ):
        yield idp, reg, client


def registration(idp: LocalIdentityProvider, **changes: Any) -> dict[str, Any]:
    return {"jwks_url": idp.jwks_url, "require_https": False, **changes}


async def register(client: httpx.AsyncClient, idp: LocalIdentityProvider, path: str = BASE, **changes: Any) -> None:
    response = await client.put(path, json=registration(idp, **changes), headers=ADMIN)
    assert response.status_code in (200, 201), response.text


# -- registration ------------------------------------------------------------------------------------


async def test_put_creates_then_replaces_a_registration() -> None:
    with anyio.fail_after(10):
        async with admin_stack() as (idp, reg, c):
            created = await c.put(BASE, json=registration(idp, labels={"team": "a"}), headers=ADMIN)
            assert created.status_code == 201
            status = msgspec.json.decode(created.content, type=ProviderStatus)
            assert (status.tenant, status.provider, status.jwks_url) == (TENANT, PROVIDER, idp.jwks_url)
            assert status.labels == {"team": "a"}
            body = registration(idp, tenant=TENANT, provider=PROVIDER, min_ttl=60)  # matching names are fine
            replaced = await c.put(BASE, json=body, headers=ADMIN)
            assert replaced.status_code == 200
            assert reg.registration(TENANT, PROVIDER).min_ttl == 60
            assert reg.status(TENANT, PROVIDER).labels == {}


@pytest.mark.parametrize(
    ("path", "changes", "pointer"),
    [
        (BASE, {"min_ttl": 3}, "#/min_ttl"),
        (BASE, {"min_ttl": "60"}, "#/min_ttl"),
        (BASE, {"retry": {"max_retries": -1}}, "#/retry/max_retries"),
        (BASE, {"retry": {"tries": 1}}, "#/retry/tries"),
        (BASE, {"bogus": 1}, "#/bogus"),
        (BASE, {"algorithms": ["RS256", 3]}, "#/algorithms/1"),
        (BASE, {"algorithms": ["HS256"]}, "#/algorithms"),
        (BASE, {"jwks_url": None}, "#/jwks_url"),
        (BASE, {"require_https": True}, "#/jwks_url"),
        (BASE, {"tenant": "other"}, "#/tenant"),
        (BASE, {"provider": "other"}, "#/provider"),
        ("/tenants/acme_corp/providers/idp", {}, "#/tenant"),
    ],
)
async def test_invalid_registration_is_422_naming_the_field(path: str, changes: dict[str, Any], pointer: str) -> None:
    with anyio.fail_after(10):
        async with admin_stack() as (idp, reg, c):
            response = await c.put(path, json=registration(idp, **changes), headers=ADMIN)
            assert response.status_code == 422, response.text
            assert response.headers["content-type"] == PROBLEM
            problem = msgspec.json.decode(response.content, type=ValidationProblem)
            assert problem.type.endswith(":invalid-registration")
            assert [e.pointer for e in problem.errors] == [pointer]
            assert problem.errors[0].field.replace(".", "/") in pointer
            assert reg.statuses() == []


async def test_registry_floor_violation_is_422() -> None:
    with anyio.fail_after(10):
        async with (
            LocalIdentityProvider() as idp,
            Registry(allow_private_networks=True) as reg,
            control_plane(reg, admin_token=TOKEN) as c,
        ):
            response = await c.put(BASE, json=registration(idp), headers=ADMIN)
    assert response.status_code == 422
    assert [e.pointer for e in msgspec.json.decode(response.content, type=ValidationProblem).errors] == [
        "#/require_https"
    ]


async def test_bodies_that_are_not_a_json_object() -> None:
    with anyio.fail_after(10):
        async with loopback_registry() as reg, control_plane(reg, admin_token=TOKEN, max_body_bytes=256) as c:
            json_headers = {**ADMIN, "content-type": "application/json"}
            assert (await c.put(BASE, content=b"{nope", headers=json_headers)).status_code == 400
            array = await c.put(BASE, content=b"[]", headers=json_headers)
            assert array.status_code == 422 and array.json()["errors"][0]["pointer"] == "#"
            form = await c.put(
                BASE, content=b"a=b", headers={**ADMIN, "content-type": "application/x-www-form-urlencoded"}
            )
            assert form.status_code == 415
            assert (await c.put(BASE, content=b"{}", headers=ADMIN)).status_code == 415  # no content type
            declared = await c.put(BASE, content=b" " * 257, headers=json_headers)
            assert declared.status_code == 413

            # a chunked upload (no Content-Length) is cut off as it crosses the limit
            put = {
                "method": "PUT",
                "path": BASE,
                "headers": [(k.encode(), v.encode()) for k, v in json_headers.items()],
            }
            chunks = [{"type": "http.request", "body": b" " * 64, "more_body": True} for _ in range(10)]
            assert (await asgi_call(create_app(reg, admin_token=TOKEN, max_body_bytes=256), put, chunks))[0] == 413
            assert reg.statuses() == []


async def test_a_deeply_nested_body_is_a_400_problem_not_a_500() -> None:
    deep = b'{"labels": {"a": "b"}, "x": ' + b"[" * 5_000 + b"]" * 5_000 + b"}"
    with anyio.fail_after(10):
        async with loopback_registry() as reg, control_plane(reg, admin_token=TOKEN) as c:
            response = await c.put(BASE, content=deep, headers={**ADMIN, "content-type": "application/json"})
            assert response.status_code == 400
            assert response.headers["content-type"] == PROBLEM
            assert "nests deeper than 32 levels" in response.json()["detail"]
            assert reg.statuses() == []


async def test_delete_unregisters_then_404() -> None:
    with anyio.fail_after(10):
        async with admin_stack() as (idp, reg, c):
            await register(c, idp)
            deleted = await c.delete(BASE, headers=ADMIN)
            assert deleted.status_code == 204 and deleted.content == b""
            again = await c.delete(BASE, headers=ADMIN)
            assert again.status_code == 404 and again.json()["type"].endswith(":not-registered")
            assert (await c.get(BASE + "/status")).status_code == 404
            assert reg.statuses() == []


async def test_a_put_body_means_what_the_same_table_of_the_serve_file_means(tmp_path: Path) -> None:
    """The server's registry floors and defaults apply to a PUT exactly as to the file's providers."""
    async with LocalIdentityProvider() as idp:
        table = {"jwks_url": idp.jwks_url, "min_ttl": 60}
        file = tmp_path / "serve.toml"
        lines = [f"{name} = {msgspec.json.encode(value).decode()}" for name, value in table.items()]
        file.write_text(
            "[registry]\nrequire_https = false\nallow_private_networks = true\n"  # no require_https per provider
            f'[[providers]]\ntenant = "{TENANT}"\nprovider = "from-file"\n' + "\n".join(lines) + "\n"
        )
        config = load_serve_config(file)
        with anyio.fail_after(10):
            async with open_registry(config) as reg:
                await reg.register(config.providers[0])
                async with control_plane(reg, admin_token=TOKEN, client_headers=ADMIN) as c:
                    put = await c.put(f"/tenants/{TENANT}/providers/via-put", json=table)
                    assert put.status_code == 201, put.text  # not a 422 asking to repeat require_https
                    names = ("from-file", "via-put")
                    from_file, via_put = (reg.registration(TENANT, name) for name in names)
                    assert msgspec.structs.replace(via_put, provider="from-file") == from_file
                    assert from_file.require_https is False
                    await reg.refresh(TENANT, "from-file")
                    await reg.refresh(TENANT, "via-put")
                    same = ("state", "jwks_url", "key_ids", "error_count", "last_error", "labels")
                    statuses = [(await c.get(f"/tenants/{TENANT}/providers/{p}/status")).json() for p in names]
                    assert [{k: status[k] for k in same} for status in statuses] == [
                        {k: statuses[0][k] for k in same}
                    ] * 2
                    assert statuses[0]["state"] == "ready"
                    strict = await c.put(f"/tenants/{TENANT}/providers/strict", json={**table, "require_https": True})
                    assert strict.status_code == 422  # a body may still be stricter than the server
                    document = (await c.get("/openapi.json")).json()
                    registration_schema = document["components"]["schemas"]["ProviderRegistration"]
                    assert registration_schema["properties"]["require_https"]["default"] is False


# -- authorization -----------------------------------------------------------------------------------


async def test_mutating_routes_answer_403_without_an_admin_token() -> None:
    with anyio.fail_after(10):
        async with (
            LocalIdentityProvider() as idp,
            loopback_registry() as reg,
            control_plane(reg, protect_reads=False) as c,
        ):
            assert (await c.put(BASE, json=registration(idp), headers=ADMIN)).status_code == 403
            await reg.register(config_for(idp))
            assert (await c.post(BASE + "/refresh", headers=ADMIN)).status_code == 403
            assert (await c.delete(BASE, headers=ADMIN)).status_code == 403
            assert (await c.get(BASE + "/status")).status_code == 200  # reads are open, as chosen
            document = (await c.get("/openapi.json")).json()
            assert set(document["paths"]["/tenants/{tenant}/providers/{provider}"]["put"]["responses"]) == {"403"}


@pytest.mark.parametrize(
    ("authorization", "challenge"),
    [
        (None, 'Bearer realm="jwks-cache"'),
        ("Bearer wrong-token-wrong-token", 'Bearer realm="jwks-cache", error="invalid_token"'),
        (f"Basic {TOKEN}", 'Bearer realm="jwks-cache", error="invalid_token"'),
        (f"Bearer {TOKEN}x", 'Bearer realm="jwks-cache", error="invalid_token"'),
    ],
)
async def test_missing_or_wrong_token_is_401_before_the_body_is_read(authorization: str | None, challenge: str) -> None:
    headers = {"content-type": "application/json"}
    if authorization is not None:
        headers["authorization"] = authorization
    with anyio.fail_after(10):
        async with loopback_registry() as reg, control_plane(reg, admin_token=TOKEN, max_body_bytes=16) as c:
            for method, path in (("PUT", BASE), ("DELETE", BASE), ("POST", BASE + "/refresh")):
                response = await c.request(method, path, content=b" " * 1024, headers=headers)
                assert response.status_code == 401, (method, response.text)
                assert response.headers["www-authenticate"] == challenge


async def test_reads_need_the_token_by_default_except_for_health_and_openapi() -> None:
    with anyio.fail_after(10):
        async with (
            LocalIdentityProvider() as idp,
            loopback_registry() as reg,
            control_plane(reg, admin_token=TOKEN) as c,
        ):
            healthy = await c.get("/healthz")
            assert (healthy.status_code, healthy.json()) == (200, {"status": "pass"})
            idp.fail(404)  # before registering: the first fetch must not win the race
            await register(c, idp)
            await eventually(lambda: reg.status(TENANT, PROVIDER).state is ProviderState.FAILED)
            for path in (BASE + "/jwks", BASE + "/status", "/status"):
                assert (await c.get(path)).status_code == 401
                assert (await c.get(path, headers=ADMIN)).status_code in (200, 503)
            anonymous = await c.get("/healthz")
            assert anonymous.status_code == 503
            assert anonymous.json() == {"status": "fail"}  # no tenant names, URLs, errors or counts
            assert msgspec.json.encode(anonymous.json()).count(b'"') == 4
            shown = (await c.get("/healthz", headers=ADMIN)).json()
            assert [(f["tenant"], f["state"]) for f in shown["failures"]] == [(TENANT, "failed")]
            assert (shown["providers"], shown["failing"]) == (1, 1)
            assert (await c.get("/openapi.json")).status_code == 200
            jwks = await c.get(BASE + "/jwks", headers=ADMIN)
            assert jwks.status_code == 503 and jwks.headers["content-type"] == PROBLEM


def test_create_app_refuses_unsafe_settings() -> None:
    registry = Registry()
    for settings in (
        {"admin_token": "short"},
        {"admin_token": "has spaces in the middle of it"},
        {},  # reads are protected by default: without a token no caller could read
        {"protect_reads": True},
        {"admin_token": TOKEN, "max_body_bytes": 0},
    ):
        with pytest.raises(ConfigError):
            create_app(registry, **settings)


# -- the key set -------------------------------------------------------------------------------------


async def test_jwks_with_strong_etag_304_and_cache_control_from_freshness() -> None:
    clock = VirtualClock()
    with anyio.fail_after(10):
        async with admin_stack(clock) as (idp, reg, c):
            idp.cache_control = "max-age=300"
            await register(c, idp, prefetch_jitter=0.0)
            response = await c.get(BASE + "/jwks")
            assert response.status_code == 200
            assert response.headers["content-type"] == "application/json"
            assert [key["kid"] for key in response.json()["keys"]] == idp.kids
            assert response.json() == (await reg.served_jwks(TENANT, PROVIDER)).jwks
            digest = base64.urlsafe_b64encode(hashlib.sha256(response.content).digest()).rstrip(b"=").decode()
            etag = response.headers["etag"]
            assert etag == f'"{digest}"'
            assert response.headers["cache-control"] == "private, max-age=300"
            for validator in (etag, f"W/{etag}", f'"other", {etag}', "*"):
                cached = await c.get(BASE + "/jwks", headers={"if-none-match": validator})
                assert cached.status_code == 304 and cached.content == b""
                assert cached.headers["etag"] == etag
            assert (await c.get(BASE + "/jwks", headers={"if-none-match": '"other"'})).status_code == 200
            await clock.advance(100)
            assert (await c.get(BASE + "/jwks")).headers["cache-control"] == "private, max-age=200"
            one = await c.get(BASE + "/jwks", params={"kid": idp.kids[1]})
            assert [key["kid"] for key in one.json()["keys"]] == [idp.kids[1]]
            assert one.headers["etag"] != etag
            missing = await c.get(BASE + "/jwks", params={"kid": "nope"})
            assert missing.status_code == 404 and missing.json()["type"].endswith(":kid-not-found")
            assert (await c.get(BASE + "/jwks?kid=a&kid=b")).status_code == 400
            assert idp.request_count == 1


async def test_jwks_serves_stale_keys_uncacheable_then_503_with_retry_after() -> None:
    clock = VirtualClock()
    with anyio.fail_after(10):
        async with admin_stack(clock) as (idp, _reg, c):
            idp.cache_control = "max-age=60"
            await register(c, idp, stale_while_error=60.0, prefetch_jitter=0.0)
            assert (await c.get(BASE + "/jwks")).status_code == 200
            idp.fail(503)
            await clock.advance(61.0)
            stale = await c.get(BASE + "/jwks")
            assert stale.status_code == 200 and stale.headers["cache-control"] == "private, no-cache"
            assert (await c.get("/healthz")).json()["status"] == "pass"  # stale keys are usable keys
            await clock.advance(60.0)
            gone = await c.get(BASE + "/jwks")
            assert gone.status_code == 503 and gone.json()["type"].endswith(":keys-unavailable")
            assert 1 <= int(gone.headers["retry-after"]) <= 3600
            health = await c.get("/healthz")
            assert health.status_code == 503
            assert health.json()["failures"][0]["state"] == "failed"
            assert "503" in health.json()["failures"][0]["last_error"]


async def test_cold_jwks_whose_first_fetch_fails_is_503() -> None:
    with anyio.fail_after(10):
        async with admin_stack() as (idp, _reg, c):
            idp.fail(404)  # not transient: no retries
            await register(c, idp)
            response = await c.get(BASE + "/jwks")
            assert response.status_code == 503 and response.headers["retry-after"].isdigit()
            assert "404" in response.json()["detail"]


async def test_unknown_provider_is_404_on_every_provider_route() -> None:
    with anyio.fail_after(10):
        async with loopback_registry() as reg, control_plane(reg, admin_token=TOKEN) as c:
            for method, suffix in (("GET", "/jwks"), ("GET", "/status"), ("POST", "/refresh"), ("DELETE", "")):
                response = await c.request(method, BASE + suffix, headers=ADMIN)
                assert response.status_code == 404, (method, suffix)
                assert response.json()["type"].endswith(":not-registered")


# -- refresh, status, health -------------------------------------------------------------------------


async def test_refresh_is_202_and_revalidates_in_the_background() -> None:
    with anyio.fail_after(10):
        async with admin_stack() as (idp, reg, c):
            await register(c, idp)
            await c.get(BASE + "/jwks")
            response = await c.post(BASE + "/refresh", headers=ADMIN)
            assert response.status_code == 202
            assert response.headers["location"] == BASE + "/status"
            assert response.json()["state"] == "refreshing"
            await eventually(lambda: reg.status(TENANT, PROVIDER).refreshes == 2)
            assert idp.request_count == 2
            assert "if-none-match" in idp.requests[-1].headers  # conditional, like Registry.refresh()


async def test_head_answers_every_get_route_with_its_headers_and_no_body() -> None:
    """Load balancers check health with HEAD; RFC 9110 §9.3.2 makes it GET without the body."""
    with anyio.fail_after(10):
        async with admin_stack() as (idp, reg, c):
            await register(c, idp)
            await eventually(lambda: all(s.state is ProviderState.READY for s in reg.statuses()))
            for path in ("/healthz", "/status", "/openapi.json", BASE + "/status", BASE + "/jwks"):
                got, head = await c.get(path), await c.head(path)
                assert (head.status_code, head.content) == (got.status_code, b""), path
                assert head.headers["content-length"] == str(len(got.content)), path
                assert head.headers["content-type"] == got.headers["content-type"], path
            assert (await c.head(BASE + "/jwks")).headers["etag"] == (await c.get(BASE + "/jwks")).headers["etag"]
            refused = await c.head(BASE + "/refresh")
            assert (refused.status_code, refused.headers["allow"]) == (405, "POST")


async def test_status_routes_and_health() -> None:
    with anyio.fail_after(10):
        async with admin_stack() as (idp, reg, c):
            empty = await c.get("/healthz")
            assert empty.status_code == 200 and empty.json() == {
                "status": "pass",
                "providers": 0,
                "failing": 0,
                "failures": [],
            }
            assert (await c.get("/status")).json() == []
            idp.stall(float("inf"))
            await register(c, idp, "/tenants/zeta/providers/idp")
            await register(c, idp)
            await idp.wait_for_requests(1)
            loading = await c.get("/healthz")
            assert loading.status_code == 503
            assert {f["state"] for f in loading.json()["failures"]} <= {"loading", "empty"}
            idp.recover()
            await eventually(lambda: all(s.state is ProviderState.READY for s in reg.statuses()))
            listed = await c.get("/status")
            assert [(s["tenant"], s["state"]) for s in listed.json()] == [(TENANT, "ready"), ("zeta", "ready")]
            one = msgspec.json.decode((await c.get(BASE + "/status")).content, type=ProviderStatus)
            assert one.key_ids == tuple(idp.kids) and one.state is ProviderState.READY
            assert (await c.get("/healthz")).status_code == 200


async def test_closed_registry_answers_503() -> None:
    with anyio.fail_after(10):
        async with loopback_registry() as reg:
            pass
        async with control_plane(reg, admin_token=TOKEN, client_headers=ADMIN) as c:
            for method, path in (("GET", "/status"), ("GET", BASE + "/jwks"), ("PUT", BASE)):
                response = await c.request(method, path, headers=ADMIN, json={"jwks_url": "https://id.example/jwks"})
                assert response.status_code == 503 and response.json()["type"].endswith(":registry-closed")
            health = await c.get("/healthz")
            assert (
                health.status_code == 503
                and health.json()["status"] == "fail"
                and "not open" in health.json()["detail"]
            )
            anonymous = await c.get("/healthz", headers={"authorization": ""})
            assert (anonymous.status_code, anonymous.json()) == (503, {"status": "fail"})


# -- routing and ASGI --------------------------------------------------------------------------------


async def test_unknown_route_is_404_and_wrong_method_405_with_allow() -> None:
    with anyio.fail_after(10):
        async with loopback_registry() as reg, control_plane(reg, admin_token=TOKEN) as c:
            for path in ("/", "/nope", "/status/", "/tenants//providers/idp/jwks", BASE + "/jwks/extra"):
                assert (await c.get(path)).status_code == 404, path
            wrong = await c.post("/healthz")
            assert wrong.status_code == 405 and wrong.headers["allow"] == "GET, HEAD"
            assert (await c.patch(BASE, headers=ADMIN)).headers["allow"] == "DELETE, PUT"


async def test_mounted_under_a_root_path() -> None:
    with anyio.fail_after(10):
        async with LocalIdentityProvider() as idp, loopback_registry() as reg:
            async with control_plane(reg, admin_token=TOKEN, root_path="/cp", client_headers=ADMIN) as c:
                await register(c, idp)
                assert (await c.get(BASE + "/jwks")).status_code == 200
                assert (await c.get("/healthz")).status_code == 200
                assert (await c.get("/openapi.json")).json()["servers"] == [{"url": "/cp"}]
                assert (await c.post(BASE + "/refresh", headers=ADMIN)).headers["location"] == f"/cp{BASE}/status"
            # hosts that strip the prefix from ``path`` themselves work too
            app = create_app(reg, protect_reads=False)
            status, _, _ = await asgi_call(app, {"path": "/healthz", "root_path": "/cp"})
            assert status == 200


async def asgi_call(
    app: Any, scope: dict[str, Any], messages: Sequence[Any] = ()
) -> tuple[int | None, dict[str, str], bytes]:
    """Drive the app with hand-made ASGI messages (what httpx cannot send)."""
    queue = list(messages) or [{"type": "http.request", "body": b"", "more_body": False}]
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return queue.pop(0) if queue else {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app({"type": "http", "method": "GET", "headers": [], **scope}, receive, send)
    if not sent:
        return None, {}, b""
    headers = {k.decode(): v.decode() for k, v in sent[0]["headers"]}
    return sent[0]["status"], headers, b"".join(m.get("body", b"") for m in sent[1:])


async def test_raw_asgi_edge_cases() -> None:
    with anyio.fail_after(10):
        async with loopback_registry() as reg:
            app = create_app(reg, admin_token=TOKEN)
            put = {"method": "PUT", "path": BASE, "headers": [(b"authorization", ADMIN["authorization"].encode())]}
            json_put = {**put, "headers": [*put["headers"], (b"content-type", b"application/json")]}
            bad_length = {**json_put, "headers": [*json_put["headers"], (b"content-length", b"12abc")]}
            assert (await asgi_call(app, bad_length))[0] == 400
            partial = [{"type": "http.request", "body": b"{", "more_body": True}, {"type": "http.disconnect"}]
            assert await asgi_call(app, json_put, partial) == (None, {}, b"")  # client gone: nothing sent
            assert reg.statuses() == []

            lifespan = [{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}]
            sent: list[dict[str, Any]] = []

            async def send(message: dict[str, Any]) -> None:
                sent.append(message)

            async def receive() -> dict[str, Any]:
                return lifespan.pop(0)

            await app({"type": "lifespan"}, receive, send)
            assert [m["type"] for m in sent] == ["lifespan.startup.complete", "lifespan.shutdown.complete"]
            sent.clear()

            async def connect() -> dict[str, Any]:
                return {"type": "websocket.connect"}

            await app({"type": "websocket", "path": "/"}, connect, send)
            assert sent == [{"type": "websocket.close", "code": 1008}]


async def test_openapi_document_covers_exactly_the_routes() -> None:
    with anyio.fail_after(10):
        async with loopback_registry() as reg, control_plane(reg, admin_token=TOKEN) as c:
            document = (await c.get("/openapi.json")).json()
    assert document["openapi"] == "3.1.0"
    assert {(path, method.upper()) for path, item in document["paths"].items() for method in item} == {
        (route.template, method) for route in ROUTES for method in route.methods
    }
    schemas = document["components"]["schemas"]
    refs = set(re.findall(r'"#/components/schemas/([A-Za-z]+)"', msgspec.json.encode(document).decode()))
    assert refs <= set(schemas)
    assert "required" not in schemas["ProviderRegistration"]
    put = document["paths"]["/tenants/{tenant}/providers/{provider}"]["put"]
    assert put["security"] == [{"bearerAuth": []}] and "401" in put["responses"] and "403" not in put["responses"]
    assert document["paths"]["/status"]["get"]["security"] == [{"bearerAuth": []}]  # reads protected by default
    assert document["paths"]["/healthz"]["get"]["security"] == [{}, {"bearerAuth": []}]


# -- a real server -----------------------------------------------------------------------------------


async def test_serves_under_hypercorn(anyio_backend: tuple[str, dict[str, Any]]) -> None:
    pytest.importorskip("hypercorn")
    from hypercorn.config import Config

    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    config = Config()
    config.bind = [f"fd://{listener.detach()}"]
    config.graceful_timeout = 1.0
    config.accesslog = None
    stop = anyio.Event()
    if anyio_backend[0] == "trio":
        from hypercorn.trio import serve
    else:
        from hypercorn.asyncio import serve  # type: ignore[assignment]
    with anyio.fail_after(10):
        async with LocalIdentityProvider() as idp, loopback_registry() as reg, anyio.create_task_group() as tg:
            tg.start_soon(lambda: serve(create_app(reg, admin_token=TOKEN), config, shutdown_trigger=stop.wait))
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
                # the socket listens already: this waits in the backlog until hypercorn accepts
                assert (await client.get("/healthz")).status_code == 200
                created = await client.put(BASE, json=registration(idp), headers=ADMIN)
                assert created.status_code == 201
                assert (await client.get(BASE + "/jwks")).status_code == 401
                jwks = await client.get(BASE + "/jwks", headers=ADMIN)
                assert [key["kid"] for key in jwks.json()["keys"]] == idp.kids
            stop.set()
