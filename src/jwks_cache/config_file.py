"""The configuration file of ``jwks-cache serve``, read for an application of your own.

A web integration (``jwks_cache.litestar``, ``jwks_cache.starlette``) or a service can take its
providers and registry settings from the very file an operator already writes for
``jwks-cache serve``, validated the same way: see the command-line docs for its tables.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from . import ProviderConfig, Registry

__all__ = ["ProvidersFile", "load_providers"]


@dataclass(frozen=True)
class ProvidersFile:
    """A validated configuration file: its providers, and the Registry its other tables describe."""

    #: the file read; errors at registration name it
    path: Path
    #: the ``[[providers]]`` tables, defaults applied (``require_https`` follows ``[registry]``)
    providers: tuple[ProviderConfig, ...]
    #: ``[control_plane] protect_reads``, for an app that mounts the control plane
    protect_reads: bool
    _serve_config: Any = field(repr=False, compare=False)

    def new_registry(self) -> Registry:
        """A new Registry (not yet entered) with the ``[registry]`` floors, CA file and ``[store]``.

        A Registry can be entered once, so an app whose lifespan may run twice (tests) asks for
        one per lifespan.
        """
        from ._cli._serve import open_registry

        return open_registry(self._serve_config)


def load_providers(path: str | os.PathLike[str]) -> ProvidersFile:
    """Read and validate a ``jwks-cache serve`` configuration file (TOML).

    Raises:
        ConfigError: the file is unreadable, not TOML, or a value is invalid; one line naming the
            file and the table or field at fault.
    """
    from ._cli._serve import load_serve_config  # the loader of `serve`, so both read a file alike

    config = load_serve_config(Path(path))
    return ProvidersFile(
        path=config.path,
        providers=config.providers,
        protect_reads=config.control_plane.protect_reads,
        _serve_config=config,
    )
