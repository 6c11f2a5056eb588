"""Edge: the ``jwks-cache`` command line (``inspect``, ``verify``, ``serve``) and ``demo`` apart.

Uses the public ``jwks_cache`` API; the runtime never imports this package.
"""

from ._main import main

__all__ = ["main"]
