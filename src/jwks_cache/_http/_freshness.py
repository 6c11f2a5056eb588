"""How long a JWKS response stays fresh: the subset of RFC 9111 a private key cache needs.

Pure functions over raw ``(name, value)`` header pairs and a ``now`` argument; nothing here reads a
clock, so the refresh loop and the tests decide what time it is. Where the RFC lets a cache choose,
we choose the restrictive reading (a JWKS that is refetched too early costs one request; one kept too
long hides a key rotation), and operator bounds ``[min_ttl, max_ttl]`` always have the last word.
"""

from __future__ import annotations

import calendar
import re
from collections.abc import Iterable, Iterator, Sequence
from datetime import UTC, datetime
from typing import Final, Literal, TypeAlias

import msgspec

__all__ = [
    "Freshness",
    "FreshnessSource",
    "Headers",
    "compute_freshness",
    "conditional_headers",
    "kept_for_revalidation",
    "merge_not_modified",
    "parse_cache_control",
    "parse_delta_seconds",
    "parse_http_date",
    "usable_validators",
]

#: Raw response header pairs; names in any case, repeated names allowed (httpx ``headers.multi_items()``).
Headers: TypeAlias = Sequence[tuple[str, str]]
FreshnessSource: TypeAlias = Literal["max-age", "expires", "heuristic", "default", "no-cache"]

#: RFC 9111 §1.2.2: delta-seconds that overflow saturate at 2**31 seconds.
_DELTA_SECONDS_MAX: Final = 2**31
#: RFC 9111 §4.2.2: "no more than some fraction of the interval since that time"; 10% is the usual one.
_HEURISTIC_FRACTION: Final = 0.1
#: Directives whose argument is delta-seconds: repeats keep the smallest, an invalid one wins outright.
_DELTA_DIRECTIVES: Final = frozenset({"max-age", "s-maxage", "stale-while-revalidate", "stale-if-error"})
# RFC 9110 §8.8.3 entity-tag, restricted to visible ASCII: obs-text could not be sent back by httpx.
_ETAG_RE: Final = re.compile(r'(?:W/)?"[\x21\x23-\x7e]*"')
#: What a stored response keeps for a later 304 to update (RFC 9111 §4.3.4): the fields freshness
#: reads that describe the representation. Validators are kept apart (Published.etag/last_modified);
#: Date and Age describe one message, so a 304 brings its own (absent: now, and zero).
_KEPT_FIELDS: Final = frozenset({"cache-control", "expires"})
#: A stored response's kept fields larger than this are not a real IdP's: they are dropped (a
#: snapshot is untrusted input), and the set then revalidates as if they had never been sent.
_KEPT_MAX_CHARS: Final = 4096


class Freshness(msgspec.Struct, frozen=True, kw_only=True):
    """What one response allows: how long to keep it, why, and the validators to revalidate with.

    Attributes:
        ttl: seconds the response stays fresh, counted from the ``now`` it was computed at; already
            clamped into ``[min_ttl, max_ttl]``.
        source: which rule gave the lifetime; ``"no-cache"`` means "revalidate at ``min_ttl``".
        no_store: the response carried ``no-store`` and must not be persisted (RFC 9111 §5.2.2.5).
        etag: the entity-tag verbatim (``W/`` kept), or None when absent or malformed.
        last_modified: the Last-Modified value verbatim when it parses as an HTTP-date, else None.
    """

    ttl: float
    source: FreshnessSource
    no_store: bool
    etag: str | None
    last_modified: str | None


def parse_delta_seconds(value: str | None) -> int | None:
    """Read RFC 9111 §1.2.2 delta-seconds (``1*DIGIT``), saturating at 2**31; None when invalid.

    ASCII digits only (``str.isdigit`` alone accepts ``"²"``); no sign, no fraction, no spaces.
    """
    if value is None or not value or not value.isascii() or not value.isdigit():
        return None
    digits = value.lstrip("0") or "0"
    # len() first: int() of a 5,000-digit string raises under Python's int_max_str_digits.
    return _DELTA_SECONDS_MAX if len(digits) > 10 else min(int(digits), _DELTA_SECONDS_MAX)


def _quoted(text: str, start: int) -> tuple[str, int]:
    # RFC 9110 §5.6.4 quoted-string at text[start] == '"'; malformed ones come back raw (with the
    # quote), so a delta-seconds reading of them fails and the response is treated as stale.
    chars: list[str] = []
    i, n = start + 1, len(text)
    while i < n and text[i] != '"':
        if text[i] == "\\" and i + 1 < n:
            i += 1
        chars.append(text[i])
        i += 1
    if i >= n:
        return text[start:].strip(), n
    end = i + 1
    while end < n and text[end] in " \t":
        end += 1
    if end < n and text[end] != ",":
        comma = text.find(",", end)
        stop = n if comma < 0 else comma
        return text[start:stop].strip(), stop
    return "".join(chars), end


def _directives(text: str) -> Iterator[tuple[str, str | None]]:
    # A comma split that respects quoted-strings: no-cache="a, b" is one directive.
    i, n = 0, len(text)
    while i < n:
        while i < n and text[i] in " \t,":
            i += 1
        start = i
        while i < n and text[i] not in "=,":
            i += 1
        name = text[start:i].strip().lower()
        argument: str | None = None
        if i < n and text[i] == "=":
            i += 1
            while i < n and text[i] in " \t":
                i += 1
            if i < n and text[i] == '"':
                argument, i = _quoted(text, i)
            else:
                start = i
                while i < n and text[i] != ",":
                    i += 1
                argument = text[start:i].strip()
        if name:
            yield name, argument


def _more_restrictive(first: str | None, second: str | None) -> str | None:
    a, b = parse_delta_seconds(first), parse_delta_seconds(second)
    if a is None:
        return first
    if b is None:
        return second
    return first if a <= b else second


def parse_cache_control(values: Iterable[str]) -> dict[str, str | None]:
    """Parse every Cache-Control field line of a response into ``{directive: argument}``.

    RFC 9111 §5.2: names are case-insensitive tokens (returned lowercased), lines are comma lists
    that combine across repeated fields, and arguments may be tokens or quoted-strings (unquoted
    here, so ``max-age="60"`` reads as ``60`` although senders must not produce it). §4.2.1 lets a
    cache treat conflicting repeats as stale; we keep the most restrictive: for delta-seconds
    directives the smallest value, and an invalid value beats any number. Other repeats keep the
    first occurrence.

    Args:
        values: the field values of every ``Cache-Control`` line, in order.

    Returns:
        Directive names mapped to their argument, or None for a bare directive.
    """
    result: dict[str, str | None] = {}
    for value in values:
        for name, argument in _directives(value):
            if name not in result:
                result[name] = argument
            elif name in _DELTA_DIRECTIVES:
                result[name] = _more_restrictive(result[name], argument)
    return result


_MONTHS: Final = {
    m: i for i, m in enumerate(("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"), 1)
}
_TIME: Final = r"(?P<H>[0-9]{2}):(?P<M>[0-9]{2}):(?P<S>[0-9]{2})"
_MON: Final = r"(?P<mon>jan|feb|mar|apr|may|jun|jul|aug|sep|oct|nov|dec)"
_FLAGS: Final = re.ASCII | re.IGNORECASE
# RFC 9110 §5.6.7, matched leniently on case and spacing ("recipients ... are encouraged to be robust").
_IMF_FIXDATE: Final = re.compile(
    rf"(?:mon|tue|wed|thu|fri|sat|sun) *, *(?P<d>[0-9]{{1,2}}) +{_MON} +(?P<y>[0-9]{{4}}) +{_TIME} +GMT", _FLAGS
)
_RFC850_DATE: Final = re.compile(
    rf"(?:mon|tues|wednes|thurs|fri|satur|sun)day *, *(?P<d>[0-9]{{1,2}})-{_MON}-(?P<y>[0-9]{{2}}|[0-9]{{4}}) +{_TIME} +GMT",
    _FLAGS,
)
_ASCTIME_DATE: Final = re.compile(
    rf"(?:mon|tue|wed|thu|fri|sat|sun) +{_MON} +(?P<d>[0-9]{{1,2}}) +{_TIME} +(?P<y>[0-9]{{4}})", _FLAGS
)


def _full_year(two_digits: int, now: float | None) -> int:
    # RFC 9110 §5.6.7: a two-digit year more than 50 years ahead means the most recent past one.
    current = 1970 if now is None else _year_of(now)
    year = current - current % 100 + two_digits
    if year > current + 50:
        year -= 100
    elif year <= current - 50:
        year += 100
    return year


def _year_of(epoch: float) -> int:
    try:
        return datetime.fromtimestamp(epoch, tz=UTC).year
    except (OverflowError, OSError, ValueError):
        return 1970


def parse_http_date(value: str, *, now: float | None = None) -> float | None:
    """Parse an HTTP-date into epoch seconds, or None when it is not one.

    RFC 9110 §5.6.7: accepts IMF-fixdate and the obsolete rfc850 and asctime forms, as recipients
    must. Case and runs of spaces are tolerated; other zones than ``GMT``, numeric offsets and
    impossible calendar dates are not, because an invalid ``Expires`` must read as "already
    expired" (RFC 9111 §5.3) rather than as a guess. A leap second (``:60``) reads as ``:59``.

    Args:
        value: the field value.
        now: wall-clock epoch seconds, used only to place an rfc850 two-digit year within 50 years
            of the present; without it the rule runs as of 1970 (``00``-``20`` are 20xx, the rest 19xx).
    """
    text = value.strip()
    match = _IMF_FIXDATE.fullmatch(text) or _RFC850_DATE.fullmatch(text) or _ASCTIME_DATE.fullmatch(text)
    if match is None:
        return None
    year = int(match["y"])
    if len(match["y"]) == 2:
        year = _full_year(year, now)
    month, day = _MONTHS[match["mon"].lower()], int(match["d"])
    hour, minute, second = int(match["H"]), int(match["M"]), int(match["S"])
    if year < 1 or not (1 <= day <= calendar.monthrange(year, month)[1] and hour < 24 and minute < 60 and second <= 60):
        return None
    return float(calendar.timegm((year, month, day, hour, minute, min(second, 59))))


def _field_values(headers: Headers, name: str) -> list[str]:
    return [value for key, value in headers if key.strip().lower() == name]


def _single(headers: Headers, name: str) -> str | None:
    # A singleton field repeated with different values is ambiguous; "" makes every parser reject it
    # (RFC 9111 §4.2.1 allows treating such a response as stale).
    values = {value.strip() for value in _field_values(headers, name)}
    if not values:
        return None
    return values.pop() if len(values) == 1 else ""


def _age(headers: Headers) -> int:
    # RFC 9111 §5.1; invalid values are ignored, repeats keep the largest (the most restrictive).
    ages = (parse_delta_seconds(part.strip()) for value in _field_values(headers, "age") for part in value.split(","))
    return max((age for age in ages if age is not None), default=0)


def _etag(headers: Headers) -> str | None:
    value = _single(headers, "etag")
    return value if value and _ETAG_RE.fullmatch(value) else None


def _lifetime(
    headers: Headers,
    directives: dict[str, str | None],
    *,
    now: float,
    last_modified: float | None,
    default_ttl: float,
) -> tuple[float, FreshnessSource]:
    # RFC 9111 §4.2.1 order: max-age overrides Expires (§5.3), then the §4.2.2 heuristic.
    if "max-age" in directives:
        seconds = parse_delta_seconds(directives["max-age"])
        return (0.0 if seconds is None else float(seconds)), "max-age"
    date_value = _single(headers, "date")
    date = parse_http_date(date_value, now=now) if date_value is not None else None
    date = now if date is None else date
    expires_value = _single(headers, "expires")
    if expires_value is not None:
        expires = parse_http_date(expires_value, now=now)
        return (0.0 if expires is None else expires - date), "expires"
    # RFC 9110 §8.8.2.1: Last-Modified must not be later than Date; if it is not earlier, it says nothing.
    if last_modified is not None and last_modified < date:
        return (date - last_modified) * _HEURISTIC_FRACTION, "heuristic"
    return default_ttl, "default"


def compute_freshness(
    headers: Headers,
    *,
    now: float,
    min_ttl: float,
    max_ttl: float,
    default_ttl: float = 300.0,
) -> Freshness:
    """Decide how long a 200 (or the headers of a 304) keeps the key set fresh.

    Lifetime (RFC 9111 §4.2.1): ``max-age`` (``s-maxage`` ignored, we are a private cache), else
    ``Expires - Date`` (Date defaults to ``now``; an invalid Expires means already expired, §5.3),
    else 10% of ``Date - Last-Modified`` (§4.2.2), else ``default_ttl``. Then ``Age`` is subtracted
    (§4.2.3, simplified: apparent age from Date is ignored because it measures clock skew between
    the IdP and us as much as time spent in caches). ``no-cache``, ``no-store``, and a max-age or
    Expires lifetime used up (zero, invalid, or eaten by Age) all mean "revalidate at ``min_ttl``".
    ``must-revalidate``, ``private``, ``public`` and unknown directives are ignored: operator
    policy (``min_ttl``, ``max_ttl``, ``stale_while_error``) wins. The result is clamped into
    ``[min_ttl, max_ttl]``; should they be inverted, ``min_ttl`` wins, so a bad bound never storms.

    Args:
        headers: raw response header pairs.
        now: wall-clock epoch seconds at which the response was received.
        min_ttl: floor of the result, in seconds.
        max_ttl: ceiling of the result, in seconds.
        default_ttl: lifetime when the response says nothing usable.
    """
    directives = parse_cache_control(_field_values(headers, "cache-control"))
    no_store = "no-store" in directives
    last_modified = _single(headers, "last-modified")
    modified_at = parse_http_date(last_modified, now=now) if last_modified else None
    lifetime, source = _lifetime(headers, directives, now=now, last_modified=modified_at, default_ttl=default_ttl)
    remaining = lifetime - _age(headers)
    # RFC 9111 §5.2.2.4 notes caches commonly treat a qualified no-cache="field" as unqualified; so do we.
    if no_store or "no-cache" in directives or (source in ("max-age", "expires") and remaining <= 0):
        source, remaining = "no-cache", min_ttl
    return Freshness(
        ttl=max(min_ttl, min(remaining, max_ttl)),
        source=source,
        no_store=no_store,
        etag=_etag(headers),
        last_modified=last_modified if modified_at is not None else None,
    )


def kept_for_revalidation(headers: Headers) -> tuple[tuple[str, str], ...]:
    """The Cache-Control and Expires lines a cache keeps so that a later 304 can update them.

    Names come back lowercased; anything else, or more than a few KiB of them (from a tampered
    snapshot, say), is dropped: these only ever lengthen a lifetime the operator bounds anyway.
    """
    kept = tuple((name, value) for key, value in headers if (name := key.strip().lower()) in _KEPT_FIELDS)
    return kept if sum(len(name) + len(value) for name, value in kept) <= _KEPT_MAX_CHARS else ()


def merge_not_modified(stored: Headers, update: Headers) -> tuple[tuple[str, str], ...]:
    """The headers a 304 leaves in place: RFC 9111 §4.3.4 and §3.2.

    Every field the 304 carries replaces the stored field of that name (all its lines); stored
    fields it does not mention stay. So a 304 without Cache-Control keeps the stored ``max-age``
    instead of falling back to a heuristic, and one carrying ``max-age`` or ``Expires`` replaces it.

    Args:
        stored: the stored response's fields (Cache-Control, Expires and the validators).
        update: every header of the 304.
    """
    carried = {key.strip().lower() for key, _ in update}
    return (*update, *((key, value) for key, value in stored if key.strip().lower() not in carried))


def usable_validators(etag: str | None, last_modified: str | None) -> tuple[str | None, str | None]:
    """Validators kept elsewhere (a snapshot), judged as a response's would be; unusable ones are None.

    A stored validator is sent back in a request header: one that is not what a response could
    have given us (a CR/LF, non-ASCII text) would make every refresh fail until the keys expire.
    """
    if etag is not None and not _ETAG_RE.fullmatch(etag):
        etag = None
    if last_modified is not None and (not last_modified.isascii() or parse_http_date(last_modified) is None):
        last_modified = None
    return etag, last_modified


def conditional_headers(etag: str | None, last_modified: str | None) -> dict[str, str]:
    """Request headers that revalidate a cached set (RFC 9110 §13.1.2, §13.1.3).

    Both validators are sent when known; servers evaluate If-None-Match first and ignore
    If-Modified-Since when it is present. Last-Modified is sent back verbatim, as §13.1.3 advises.
    """
    headers: dict[str, str] = {}
    if etag is not None:
        headers["If-None-Match"] = etag
    if last_modified is not None:
        headers["If-Modified-Since"] = last_modified
    return headers
