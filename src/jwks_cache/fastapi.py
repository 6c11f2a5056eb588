"""Bearer-token authentication for FastAPI: a security scheme that returns the verified claims.

::

    from fastapi import FastAPI, Security
    from jwks_cache.fastapi import BearerToken, lifespan

    app = FastAPI(lifespan=lifespan([ProviderConfig(tenant="acme", provider="okta", issuer=...)]))
    okta = BearerToken(tenant="acme", provider="okta")

    @app.get("/orders")
    async def orders(claims: dict = Security(okta, scopes=["orders:read"])) -> str:
        return claims["sub"]

:class:`BearerToken` shows in the OpenAPI document as an HTTP bearer scheme (so ``/docs`` has an
*Authorize* button), and answers RFC 6750: 401 ``invalid_token`` (a bare ``Bearer`` challenge
without a token), 403 ``insufficient_scope`` naming the scopes ``Security`` asks for (scopes of
enclosing dependencies add up, as ``SecurityScopes`` does), and 503 while no signing keys can be had.
The lifespan helpers are ``jwks_cache.starlette``'s, re-exported. Needs the ``fastapi`` extra.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from fastapi import HTTPException
from fastapi.openapi.models import HTTPBearer as HTTPBearerModel
from fastapi.security import SecurityScopes
from fastapi.security.base import SecurityBase
from starlette.requests import Request

from jwks_cache.bearer import Refused, Selector, check_grants

from .starlette import (
    STATE_KEY,
    BearerAuthenticationError,
    header,
    lifespan,
    open_registry,
    path_param,
    registry_of,
    verify_request,
)

__all__ = ["STATE_KEY", "BearerToken", "header", "lifespan", "open_registry", "path_param", "registry_of"]


class BearerToken(SecurityBase):
    """A FastAPI security dependency: ``Security(scheme, scopes=[...])`` gives the verified claims.

    Args:
        tenant, provider: whose keys verify the token: a name, or a selector of the request such
            as ``path_param("tenant")`` (dependencies run after routing) or ``header(...)``.
        audience, issuer: replace the registration's (see :meth:`Registry.verify`).
        require_claims: claims every token must carry (besides the registration's).
        roles: roles every token must hold in ``roles_claim`` (a dotted path), else 403.
        leeway: seconds of clock skew tolerated.
        scheme_name, description: how the scheme shows in the OpenAPI document.
    """

    def __init__(
        self,
        *,
        tenant: Selector,
        provider: Selector,
        audience: str | Sequence[str] | None = None,
        issuer: str | Sequence[str] | None = None,
        require_claims: Sequence[str] = (),
        roles: Sequence[str] = (),
        roles_claim: str = "roles",
        leeway: float = 0.0,
        scheme_name: str | None = None,
        description: str | None = "A token of a registered identity provider, verified by jwks-cache.",
    ) -> None:
        self.model = HTTPBearerModel(bearerFormat="JWT", description=description)
        self.scheme_name = scheme_name or type(self).__name__
        self.tenant = tenant
        self.provider = provider
        self.audience = audience
        self.issuer = issuer
        self.require_claims = tuple(require_claims)
        self.roles = tuple(roles)
        self.roles_claim = roles_claim
        self.leeway = leeway

    async def __call__(self, request: Request, security_scopes: SecurityScopes) -> dict[str, Any]:
        try:
            claims = await verify_request(
                request,
                tenant=self.tenant,
                provider=self.provider,
                audience=self.audience,
                issuer=self.issuer,
                leeway=self.leeway,
                require_claims=self.require_claims,
            )
        except BearerAuthenticationError as exc:
            raise HTTPException(exc.status, exc.detail, headers=exc.headers) from exc.__cause__
        try:
            check_grants(claims, scopes=security_scopes.scopes, roles=self.roles, role_claim=self.roles_claim)
        except Refused as refused:
            raise HTTPException(refused.status, refused.detail, headers=refused.headers) from refused.__cause__
        return claims
