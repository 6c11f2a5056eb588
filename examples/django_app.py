"""A single-file Django app verifying bearer tokens through a SyncRegistry.

Settings, URLs and views live in this one module (``settings.configure``). A project would start
the registry in its ``AppConfig.ready()`` with ``start_registry`` and keep it for the process's
life; the facade closes itself at interpreter exit, flushing its store. The views are guarded by
``require_token``, which answers per RFC 6750 (401/403 with ``WWW-Authenticate``, 503 while the
keys are unavailable) and puts the verified claims on ``request.jwt_claims``.

Run: ``python examples/django_app.py`` (a local identity provider and Django's test client, so it
needs no network).
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

import django
from anyio.from_thread import start_blocking_portal
from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.urls import path

from jwks_cache import ProviderConfig
from jwks_cache.bearer import Challenge
from jwks_cache.sync import SyncRegistry, TokenGuard
from jwks_cache.testing import LocalIdentityProvider

TENANT, PROVIDER = "acme", "local"

if not settings.configured:
    settings.configure(
        DEBUG=False,
        SECRET_KEY="example-only-not-secret",  # a demo app without sessions
        ROOT_URLCONF=__name__,
        ALLOWED_HOSTS=["testserver", "localhost", "127.0.0.1"],
        MIDDLEWARE=[],
        INSTALLED_APPS=[],
    )
    django.setup()


class _Holder:
    """The process's SyncRegistry, set by ``start_registry`` (``AppConfig.ready`` in a project)."""

    registry: SyncRegistry | None = None


def start_registry(providers: Iterable[ProviderConfig], *, warm_timeout: float = 5.0, **kwargs: Any) -> SyncRegistry:
    """Start the registry the views use, register ``providers`` and wait up to ``warm_timeout`` for their keys."""
    registry = SyncRegistry(**kwargs).start()
    registry.register_many(providers)
    registry.warm(max_wait=warm_timeout)
    _Holder.registry = registry
    return registry


def _current() -> SyncRegistry:
    if _Holder.registry is None:
        raise RuntimeError("call start_registry() first (from AppConfig.ready in a project)")
    return _Holder.registry


def _answer(challenge: Challenge) -> HttpResponse:
    return JsonResponse(challenge.body, status=challenge.status, headers=challenge.headers)


def _keep(claims: dict[str, Any], request: HttpRequest, *_args: Any, **_kwargs: Any) -> None:
    request.jwt_claims = claims


require_token = TokenGuard(
    _current,
    authorization=lambda request, *_args, **_kwargs: request.headers.get("Authorization"),
    respond=_answer,
    store=_keep,
).require_token


@require_token(tenant=TENANT, provider=PROVIDER)
def whoami(request: HttpRequest) -> HttpResponse:
    return JsonResponse({"sub": request.jwt_claims["sub"]})


@require_token(tenant=TENANT, provider=PROVIDER, scopes=["orders:read"])
def orders(request: HttpRequest) -> HttpResponse:
    return JsonResponse({"orders": [], "for": request.jwt_claims["sub"]})


@require_token(tenant=lambda _request, tenant: tenant, provider=PROVIDER)  # the tenant of the path
def tenant_whoami(request: HttpRequest, tenant: str) -> HttpResponse:
    return JsonResponse({"tenant": tenant, "sub": request.jwt_claims["sub"]})


urlpatterns = [
    path("whoami", whoami),
    path("orders", orders),
    path("tenants/<str:tenant>/whoami", tenant_whoami),
]


def main() -> None:
    from django.test import Client

    with (
        start_blocking_portal() as portal,
        portal.wrap_async_context_manager(LocalIdentityProvider()) as idp,
    ):
        provider = ProviderConfig(
            tenant=TENANT, provider=PROVIDER, jwks_url=idp.jwks_url, require_https=False, audience="orders"
        )
        registry = start_registry([provider], require_https=False, allow_private_networks=True)
        now = int(time.time())
        good = idp.mint({"sub": "alice", "aud": "orders", "scope": "orders:read", "exp": now + 60})
        reader = idp.mint({"sub": "bob", "aud": "orders", "exp": now + 60})
        expired = idp.mint({"sub": "alice", "aud": "orders", "exp": now - 60})
        client = Client()
        for url, token in (("/orders", good), ("/orders", reader), ("/whoami", expired), ("/whoami", None)):
            headers = {"Authorization": f"Bearer {token}"} if token else {}
            response = client.get(url, headers=headers)
            print(response.status_code, url, response.headers.get("WWW-Authenticate", response.json()))
        registry.close()  # optional: at exit it would close itself


if __name__ == "__main__":
    main()
