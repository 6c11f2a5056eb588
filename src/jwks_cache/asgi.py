"""The control-plane ASGI app (``jwks_cache.asgi.create_app``): manage and inspect a running Registry over HTTP.

Framework-free ASGI 3, so it runs under any ASGI server on asyncio or trio (hypercorn serves both)
and mounts inside Starlette, Litestar or Quart. See :func:`create_app`.
"""

from ._asgi._app import create_app

__all__ = ["create_app"]
