"""The ``jwks-cache`` command: ``demo``, ``inspect``, ``verify`` and ``serve``.

Every network command goes through a real :class:`Registry` with one registration, so what the
command shows is what a service using the library would get: same URL policy, redirects, size
caps, retries and key hygiene. Exit codes: 0 ok, 1 a fetch or verification failed, 2 usage.
Errors are one line on stderr; a ``JwksCacheError`` never prints a traceback.
"""

from __future__ import annotations

import argparse
import importlib.util
import logging
import os
import sys
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from typing import Final

import anyio
import anyio.to_thread
import msgspec

from .._config import ProviderConfig
from .._errors import ConfigError, FetchError, JwksCacheError, KeyNotFoundError, SecurityError, TokenError
from .._http._transport import ca_file_context
from .._models import KeyInfo, ServedJwks
from .._runtime._registry import Registry
from .._version import __version__
from ._text import format_table

__all__ = ["InspectReport", "KeyRow", "build_parser", "main"]

PROG: Final = "jwks-cache"
EXIT_OK: Final = 0
EXIT_FAILURE: Final = 1
EXIT_USAGE: Final = 2
_TENANT: Final = "cli"
_PROVIDER: Final = "jwks"
_BACKENDS: Final = ("asyncio", "trio")
# One flag fixes each policy refusal; saying which beats making the user read the docs.
_HINTS: Final = (
    ("require_https", "--allow-http"),
    ("allow_private_networks", "--allow-private-networks"),
)

Handler = Callable[[argparse.Namespace], Awaitable[int]]


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line and return the exit code (the console script passes it to ``sys.exit``).

    Args:
        argv: the arguments after the program name; ``sys.argv[1:]`` when None.
    """
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help and usage errors: return the code so callers may embed main()
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    if args.backend == "trio" and importlib.util.find_spec("trio") is None:
        _error("the trio backend is not installed (pip install trio)")
        return EXIT_USAGE
    handler: Handler = args.handler
    try:
        with _library_logs(verbose=args.verbose):
            return anyio.run(handler, args, backend=args.backend)
    except KeyboardInterrupt:
        return 130
    except (JwksCacheError, BaseExceptionGroup) as exc:
        error = _expected_error(exc)
        if error is None:
            raise  # a bug: the traceback is the useful output
        _error(_with_hint(str(error)))
        return EXIT_USAGE if isinstance(error, ConfigError) else EXIT_FAILURE


@contextmanager
def _library_logs(*, verbose: bool) -> Iterator[None]:
    """The library's warnings reach stderr with -v only; without it, one failure would print twice."""
    logger = logging.getLogger("jwks_cache")
    handler: logging.Handler = logging.NullHandler()  # stops logging's last-resort stderr output
    if verbose:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter(f"{PROG}: %(levelname)s: %(message)s"))
    level = logger.level
    logger.addHandler(handler)
    if verbose:
        logger.setLevel(logging.INFO)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


def _expected_error(exc: BaseException) -> JwksCacheError | None:
    """The first JwksCacheError of ``exc``, if it (or every leaf of its group) is one."""
    if isinstance(exc, JwksCacheError):
        return exc
    if isinstance(exc, BaseExceptionGroup):
        leaves = [_expected_error(inner) for inner in exc.exceptions]
        if leaves and all(leaf is not None for leaf in leaves):
            return leaves[0]
    return None


def build_parser() -> argparse.ArgumentParser:
    """The full parser; each subcommand is one ``_add_*`` function below."""
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Cache, inspect and verify against identity providers' JWKS signing keys.",
        epilog=f"Start with `{PROG} demo`: it needs no network beyond 127.0.0.1.",
    )
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="show the library's log messages on stderr")
    _add_backend(parser, default="asyncio")
    # The same option after the subcommand; SUPPRESS keeps it from overwriting the global one.
    common = argparse.ArgumentParser(add_help=False)
    _add_backend(common, default=argparse.SUPPRESS)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in _COMMANDS:
        add(sub, common)
    return parser


def _add_backend(parser: argparse.ArgumentParser, *, default: str) -> None:
    parser.add_argument("--backend", choices=_BACKENDS, default=default, help="event loop to run on (default asyncio)")


# -- demo ------------------------------------------------------------------------------------------


def _add_demo(sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "demo",
        parents=[common],
        help="a tour of the cache against local identity providers (start here)",
        description="Runs local identity providers on 127.0.0.1 and shows the cache at work in a few seconds.",
    )
    p.add_argument("--quick", action="store_true", help="skip the timing loops")
    p.set_defaults(handler=_demo)


async def _demo(args: argparse.Namespace) -> int:
    from ._demo import run_demo  # the testing kit it uses is not needed by the other commands

    problems = await run_demo(sys.stdout, quick=args.quick, backend=args.backend)
    if problems:
        _error(f"demo: expected {'; '.join(problems)}")
        return EXIT_FAILURE
    return EXIT_OK


# -- inspect ---------------------------------------------------------------------------------------


def _add_cacert(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--cacert",
        metavar="FILE",
        help="trust the CA certificates of this PEM file instead of the default bundle (or SSL_CERT_FILE)",
    )


def _add_policy_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--allow-http", action="store_true", help="allow plain http URLs (require_https off)")
    p.add_argument(
        "--allow-private-networks",
        action="store_true",
        help="allow hosts on loopback, private or link-local addresses (needed for 127.0.0.1)",
    )
    _add_cacert(p)


def _add_inspect(sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "inspect",
        parents=[common],
        help="fetch a JWKS once and show every key, skipped keys and freshness",
        description="Fetch a JWKS once, through the same transport policy as the Registry, and report on it.",
    )
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("url", nargs="?", help="the JWKS URL")
    source.add_argument("--issuer", metavar="ISS", help="an OIDC issuer; the JWKS URL comes from discovery")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    _add_policy_flags(p)
    p.add_argument("--min-ttl", type=float, default=30.0, metavar="SECONDS", help="lower clamp of the TTL (>= 30)")
    p.add_argument("--max-ttl", type=float, default=86400.0, metavar="SECONDS", help="upper clamp of the TTL")
    p.set_defaults(handler=_inspect)


async def _inspect(args: argparse.Namespace) -> int:
    config = _one_off_config(args, jwks_url=args.url, issuer=args.issuer, min_ttl=args.min_ttl, max_ttl=args.max_ttl)
    async with _one_off_registry(args) as reg:
        await reg.register(config)
        await reg.refresh(_TENANT, _PROVIDER)
        served = await reg.served_jwks(_TENANT, _PROVIDER)  # the set refresh() just put in place
    report = build_report(served, issuer=args.issuer, config=config)
    if args.json:
        sys.stdout.write(msgspec.json.format(msgspec.json.encode(report), indent=2).decode() + "\n")
    else:
        sys.stdout.write(render_report(report))
    return EXIT_OK


#: one JWK of the document, served or not (the public view, under the name ``--json`` reports have used)
KeyRow = KeyInfo


class InspectReport(msgspec.Struct, kw_only=True):
    """What ``inspect`` found; ``--json`` prints exactly this."""

    jwks_url: str
    issuer: str | None
    keys: list[KeyRow]
    fetched_at: datetime
    expires_at: datetime
    ttl: float  # after clamping to [min_ttl, max_ttl]
    min_ttl: float
    max_ttl: float
    no_store: bool
    etag: str | None
    last_modified: str | None


def build_report(served: ServedJwks, *, issuer: str | None, config: ProviderConfig) -> InspectReport:
    return InspectReport(
        jwks_url=served.jwks_url,
        issuer=issuer,
        keys=list(served.keys),
        fetched_at=served.fetched_at,
        expires_at=served.expires_at,
        ttl=served.ttl,
        min_ttl=config.min_ttl,
        max_ttl=config.max_ttl,
        no_store=served.no_store,
        etag=served.etag,
        last_modified=served.last_modified,
    )


def render_report(report: InspectReport) -> str:
    served = sum(row.served for row in report.keys)
    lines = [f"JWKS    {report.jwks_url}"]
    if report.issuer is not None:
        lines.append(f"issuer  {report.issuer} (JWKS URL from discovery)")
    lines += ["", f"keys: {served} served, {len(report.keys) - served} skipped"]
    table = [
        [row.kid or "-", row.kty or "-", row.alg or "-", row.size or "-", row.use or "-", _verdict(row)]
        for row in report.keys
    ]
    lines += ["  " + line for line in format_table(["kid", "kty", "alg", "size", "use", "status"], table)]
    lines += [
        "",
        "freshness",
        f"  fetched        {_iso(report.fetched_at)}",
        f"  expires        {_iso(report.expires_at)}",
        f"  ttl            {report.ttl:g} s (clamped to [{report.min_ttl:g}, {report.max_ttl:g}])",
        f"  no-store       {'yes: never persisted' if report.no_store else 'no'}",
        "validators",
        f"  ETag           {report.etag or '(none)'}",
        f"  Last-Modified  {report.last_modified or '(none)'}",
    ]
    return "\n".join(lines) + "\n"


def _verdict(row: KeyRow) -> str:
    return "served" if row.served else f"skipped: {row.reason}"


def _iso(moment: datetime) -> str:
    return moment.isoformat(timespec="seconds").replace("+00:00", "Z")


# -- verify ----------------------------------------------------------------------------------------


def _add_verify(sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "verify",
        parents=[common],
        help="verify a JWT against an identity provider's keys and print its claims",
        description=(
            "Verify a compact JWS/JWT and print its claims as JSON. With --issuer the token's iss must match; "
            "with --jwks-url alone iss is not checked. Only asymmetric algorithms are accepted."
        ),
    )
    p.add_argument("token", metavar="TOKEN", help="the token, or - to read it from stdin (keeps it out of history)")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--issuer", metavar="ISS", help="an OIDC issuer (discovery gives the JWKS URL)")
    source.add_argument("--jwks-url", metavar="URL", help="the JWKS URL")
    p.add_argument("--audience", metavar="A", help="the expected aud; a token with an aud fails without it")
    _add_policy_flags(p)
    p.set_defaults(handler=_verify)


async def _verify(args: argparse.Namespace) -> int:
    token: str = args.token
    if token == "-":
        token = (await anyio.to_thread.run_sync(sys.stdin.read)).strip()
    config = _one_off_config(args, jwks_url=args.jwks_url, issuer=args.issuer)
    try:
        async with _one_off_registry(args) as reg:
            await reg.register(config)
            claims = await reg.verify(token, tenant=_TENANT, provider=_PROVIDER, audience=args.audience)
    except ConfigError:
        raise
    except JwksCacheError as exc:
        _error(f"{_reason(exc)}: {_with_hint(str(exc))}")
        return EXIT_FAILURE
    sys.stdout.write(msgspec.json.format(msgspec.json.encode(claims), indent=2).decode() + "\n")
    return EXIT_OK


def _reason(exc: JwksCacheError) -> str:
    """A short machine-readable code, like ``TokenError.reason``, for every failure verify can meet."""
    if isinstance(exc, TokenError):
        return exc.reason
    if isinstance(exc, KeyNotFoundError):
        return "unknown_kid"
    if isinstance(exc, SecurityError):
        return "refused"
    if isinstance(exc, FetchError):
        return "fetch_failed"
    return "error"


# -- serve -----------------------------------------------------------------------------------------


def _add_serve(sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "serve",
        parents=[common],
        help="run the control-plane HTTP API over a Registry configured from a TOML file",
        description=(
            "Register the providers of a TOML file ([registry], optional [store], [[providers]]) and serve the "
            "control-plane API with hypercorn until SIGINT or SIGTERM. Needs the [server] extra."
        ),
    )
    p.add_argument("--config", required=True, metavar="FILE", help="the TOML configuration file")
    p.add_argument("--host", default="127.0.0.1", help="the address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8080, help="the port to listen on; 0 picks a free one (default 8080)")
    p.add_argument(
        "--admin-token-env",
        metavar="NAME",
        help="the environment variable holding the admin bearer token; without it mutating routes answer 403",
    )
    _add_cacert(p)  # overrides the file's [registry] ca_file
    p.set_defaults(handler=_serve)


async def _serve(args: argparse.Namespace) -> int:
    if importlib.util.find_spec("hypercorn") is None:
        _error("serve needs hypercorn: install jwks-cache[server]")
        return EXIT_USAGE
    from ._serve import load_serve_config, serve, with_ca_file

    def ready(providers: int) -> None:
        admin = "enabled" if admin_token is not None else "disabled (no admin token)"
        reads = "need the token" if config.control_plane.protect_reads else "open to anyone"
        print(f"{PROG}: {providers} provider(s) registered; admin routes {admin}; reads {reads}", flush=True)

    try:
        admin_token = _admin_token(args.admin_token_env)
        config = load_serve_config(args.config)
        if args.cacert is not None:
            config = with_ca_file(config, args.cacert, setting="--cacert")
        await serve(
            config, host=args.host, port=args.port, backend=args.backend, admin_token=admin_token, on_ready=ready
        )
    except ConfigError as exc:  # printed here: main()'s flag hints suit inspect/verify, not a file
        _error(str(exc))
        return EXIT_USAGE
    except OSError as exc:  # cannot listen: the port is taken or the address is not ours
        _error(f"serve: cannot listen on {args.host}:{args.port}: {exc.strerror or exc}")
        return EXIT_FAILURE
    return EXIT_OK


def _admin_token(variable: str | None) -> str | None:
    if variable is None:
        return None
    token = os.environ.get(variable)
    if token is None:  # a typo must not silently turn the admin routes off
        raise ConfigError(f"--admin-token-env: the environment variable {variable} is not set")
    return token


_COMMANDS: Final = (_add_demo, _add_inspect, _add_verify, _add_serve)


# -- shared ----------------------------------------------------------------------------------------


def _one_off_registry(args: argparse.Namespace) -> Registry:
    """Raises ConfigError (exit 2) for a --cacert file that cannot be used, naming it."""
    context = None if args.cacert is None else ca_file_context(args.cacert, setting="--cacert")
    return Registry(
        require_https=not args.allow_http, allow_private_networks=args.allow_private_networks, ssl_context=context
    )


def _one_off_config(
    args: argparse.Namespace,
    *,
    jwks_url: str | None,
    issuer: str | None,
    min_ttl: float = 30.0,
    max_ttl: float = 86400.0,
) -> ProviderConfig:
    return ProviderConfig(
        tenant=_TENANT,
        provider=_PROVIDER,
        jwks_url=jwks_url,
        issuer=issuer,
        require_https=not args.allow_http,
        min_ttl=min_ttl,
        max_ttl=max_ttl,
        refresh_early=min(30.0, max_ttl / 2),  # must stay below max_ttl; a one-shot fetch never refreshes
    )


def _with_hint(message: str) -> str:
    for setting, flag in _HINTS:
        if setting in message:
            return f"{message} (pass {flag})"
    return message


def _error(message: str) -> None:
    print(f"{PROG}: error: {message}", file=sys.stderr)
