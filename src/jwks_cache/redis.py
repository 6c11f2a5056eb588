"""Redis persistence for jwks-cache (the ``redis`` extra: ``pip install jwks-cache[redis]``).

Importing this module does not import coredis; constructing a :class:`RedisStore` does.
"""

from ._stores._redis import RedisStore

__all__ = ["RedisStore"]
