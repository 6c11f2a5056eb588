"""Edge: the control-plane ASGI app over a running Registry (public face: ``jwks_cache.asgi``).

Uses the Registry's public methods and views only; the runtime never imports this package.
"""
