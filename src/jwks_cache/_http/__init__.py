"""Everything HTTP: the pure rules of a fetch and the one httpx boundary that applies them.

Pure (``now`` is an argument): ``_freshness`` (RFC 9111 lifetimes and validators), ``_policy``
(per-hop transport security), ``_cadence`` (next refresh, backoff, unknown-kid cooldown).
Adapters: ``_transport`` (the guarded network backend), ``_fetch`` (one GET, the sole httpx
boundary) and ``_retry`` (the only tenacity import).
"""
