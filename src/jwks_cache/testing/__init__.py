"""A testing kit for services that verify tokens with jwks-cache.

``LocalIdentityProvider`` serves JWKS and OIDC discovery on 127.0.0.1 (optionally over TLS with an
in-memory CA; needs ``trustme``), mints tokens and misbehaves on request. ``VirtualClock`` runs the
registry's timers in virtual time on asyncio and trio alike. The pytest plugin (registered as an
entry point) provides the ``local_idp`` and ``virtual_clock`` fixtures.
"""

from ._clock import VirtualClock
from ._idp import LocalIdentityProvider, RecordedRequest
from ._keys import SUPPORTED_ALGORITHMS, KeyRing

__all__ = ["SUPPORTED_ALGORITHMS", "KeyRing", "LocalIdentityProvider", "RecordedRequest", "VirtualClock"]
