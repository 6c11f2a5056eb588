"""``python -m jwks_cache``: the same command line as the ``jwks-cache`` script."""

from ._cli._main import main

if __name__ == "__main__":
    raise SystemExit(main())
