"""RFC 9111 freshness rules, in the RFC's order, one table per rule."""

from __future__ import annotations

import calendar

import pytest

from jwks_cache._http._freshness import (
    Headers,
    compute_freshness,
    conditional_headers,
    kept_for_revalidation,
    merge_not_modified,
    parse_cache_control,
    parse_delta_seconds,
    parse_http_date,
)

# Sun, 06 Nov 1994 08:49:37 GMT, the RFC's example instant.
T0 = float(calendar.timegm((1994, 11, 6, 8, 49, 37)))
NOW = float(calendar.timegm((2025, 3, 1, 12, 0, 0)))
NOW_DATE = "Sat, 01 Mar 2025 12:00:00 GMT"
MIN, MAX = 30.0, 86400.0


def fresh(
    headers: Headers, *, min_ttl: float = MIN, max_ttl: float = MAX, default_ttl: float = 300.0
) -> tuple[float, str]:
    result = compute_freshness(headers, now=NOW, min_ttl=min_ttl, max_ttl=max_ttl, default_ttl=default_ttl)
    return result.ttl, result.source


# -- §5.2 Cache-Control parsing ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        pytest.param([], {}, id="none"),
        pytest.param(["max-age=60"], {"max-age": "60"}, id="simple"),
        pytest.param(["Max-Age=60, PUBLIC"], {"max-age": "60", "public": None}, id="names-case-insensitive"),
        pytest.param(["public", "max-age=60"], {"public": None, "max-age": "60"}, id="combined-across-lines"),
        pytest.param(['max-age="60"'], {"max-age": "60"}, id="quoted-value-accepted"),
        pytest.param(
            ['no-cache="Set-Cookie, X-Foo", max-age=5'],
            {"no-cache": "Set-Cookie, X-Foo", "max-age": "5"},
            id="comma-inside-quoted-string",
        ),
        pytest.param([r'x="a\"b"'], {"x": 'a"b'}, id="quoted-pair-unescaped"),
        pytest.param([" , ,max-age=1 ,, "], {"max-age": "1"}, id="empty-list-elements"),
        pytest.param(["max-age = 7"], {"max-age": "7"}, id="spaces-around-equals"),
        pytest.param(["max-age=60, max-age=30"], {"max-age": "30"}, id="duplicate-keeps-smallest"),
        pytest.param(["max-age=30", "max-age=60"], {"max-age": "30"}, id="duplicate-across-lines"),
        pytest.param(["max-age=60, max-age=abc"], {"max-age": "abc"}, id="duplicate-invalid-wins"),
        pytest.param(["max-age=abc, max-age=60"], {"max-age": "abc"}, id="invalid-first-wins"),
        pytest.param(["max-age, max-age=60"], {"max-age": None}, id="bare-max-age-wins"),
        pytest.param(['private="a", private'], {"private": "a"}, id="other-duplicates-keep-first"),
        pytest.param(['max-age="60'], {"max-age": '"60'}, id="unterminated-quote-kept-raw"),
        pytest.param(['max-age="60"x, public'], {"max-age": '"60"x', "public": None}, id="junk-after-quote-kept-raw"),
        pytest.param(["=5, public"], {"public": None}, id="missing-name-skipped"),
    ],
)
def test_parse_cache_control(values: list[str], expected: dict[str, str | None]) -> None:
    assert parse_cache_control(values) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("0", 0),
        ("60", 60),
        ("007", 7),
        ("2147483648", 2**31),
        ("2147483649", 2**31),
        ("9" * 5000, 2**31),
        ("0" * 5000 + "5", 5),
        ("-1", None),
        ("+1", None),
        ("1.5", None),
        (" 1", None),
        ("", None),
        ("abc", None),
        ("²", None),
        ("١٢", None),
        (None, None),
    ],
)
def test_parse_delta_seconds(value: str | None, expected: int | None) -> None:
    assert parse_delta_seconds(value) == expected


# -- RFC 9110 §5.6.7 HTTP-date -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        pytest.param("Sun, 06 Nov 1994 08:49:37 GMT", T0, id="imf-fixdate"),
        pytest.param("Sunday, 06-Nov-94 08:49:37 GMT", T0, id="rfc850"),
        pytest.param("Sun Nov  6 08:49:37 1994", T0, id="asctime"),
        pytest.param("Sun Nov 06 08:49:37 1994", T0, id="asctime-two-digit-day"),
        pytest.param("  Sun, 06 Nov 1994 08:49:37 GMT  ", T0, id="surrounding-space"),
        pytest.param("sun, 06 nov 1994 08:49:37 gmt", T0, id="lowercase"),
        pytest.param("Sun,  6 Nov 1994 08:49:37 GMT", T0, id="one-digit-day"),
        pytest.param("Sunday, 06-Nov-1994 08:49:37 GMT", T0, id="rfc850-four-digit-year"),
        pytest.param("Sat, 31 Dec 2016 23:59:60 GMT", calendar.timegm((2016, 12, 31, 23, 59, 59)), id="leap-second"),
        pytest.param("Thu, 01 Jan 1970 00:00:00 GMT", 0.0, id="epoch"),
        pytest.param("Fri, 31 Dec 9999 23:59:59 GMT", calendar.timegm((9999, 12, 31, 23, 59, 59)), id="far-future"),
        pytest.param("0", None, id="zero"),
        pytest.param("-1", None, id="minus-one"),
        pytest.param("", None, id="empty"),
        pytest.param("Sun, 06 Nov 1994 08:49:37 UTC", None, id="utc-zone"),
        pytest.param("Sun, 06 Nov 1994 08:49:37 +0000", None, id="numeric-offset"),
        pytest.param("Sun, 06 Nov 1994 08:49:37", None, id="no-zone"),
        pytest.param("1994-11-06T08:49:37Z", None, id="iso8601"),
        pytest.param("Sun, 30 Feb 1994 08:49:37 GMT", None, id="impossible-day"),
        pytest.param("Sun, 06 Nov 1994 24:00:00 GMT", None, id="hour-24"),
        pytest.param("Sun, 06 Nov 1994 08:60:00 GMT", None, id="minute-60"),
        pytest.param("Sun, 06 Foo 1994 08:49:37 GMT", None, id="bad-month"),
        pytest.param("Xyz, 06 Nov 1994 08:49:37 GMT", None, id="bad-day-name"),
        pytest.param("Sun, 06 Nov 0000 08:49:37 GMT", None, id="year-zero"),
        pytest.param("Sun, ٠٦ Nov 1994 08:49:37 GMT", None, id="non-ascii-digits"),
        pytest.param("Sun, 06 Nov 1994 08:49:37 GMT trailing", None, id="trailing-junk"),
    ],
)
def test_parse_http_date(value: str, expected: float | None) -> None:
    assert parse_http_date(value) == expected


@pytest.mark.parametrize(
    ("value", "year"),
    [
        ("Sunday, 06-Nov-94 08:49:37 GMT", 1994),
        ("Monday, 06-Nov-23 08:49:37 GMT", 2023),
        ("Friday, 06-Nov-75 08:49:37 GMT", 2075),  # 50 years ahead of 2025: still the future
        ("Friday, 06-Nov-76 08:49:37 GMT", 1976),  # more than 50 years ahead: the past century
    ],
)
def test_rfc850_two_digit_year_is_within_fifty_years_of_now(value: str, year: int) -> None:
    parsed = parse_http_date(value, now=NOW)
    assert parsed is not None
    assert parsed == calendar.timegm((year, 11, 6, 8, 49, 37))


# -- §4.2.1 lifetime: max-age, then Expires - Date, then heuristic, then default --------------------


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        pytest.param([], (300.0, "default"), id="no-headers-at-all"),
        pytest.param([("Cache-Control", "max-age=600")], (600.0, "max-age"), id="max-age"),
        pytest.param([("cache-control", 'max-age="600"')], (600.0, "max-age"), id="quoted-max-age"),
        pytest.param([("Cache-Control", "s-maxage=5, max-age=600")], (600.0, "max-age"), id="s-maxage-ignored"),
        pytest.param([("Cache-Control", "s-maxage=5")], (300.0, "default"), id="s-maxage-alone-ignored"),
        pytest.param(
            [("Cache-Control", "max-age=600"), ("Expires", "Thu, 01 Jan 1970 00:00:00 GMT")],
            (600.0, "max-age"),
            id="max-age-overrides-expires",
        ),
        pytest.param(
            [("Cache-Control", "max-age=600, max-age=120")], (120.0, "max-age"), id="duplicate-max-age-smallest"
        ),
        pytest.param(
            [("Cache-Control", "public, must-revalidate, private, x-custom=1, max-age=600")],
            (600.0, "max-age"),
            id="ignored-directives",
        ),
        pytest.param(
            [("Cache-Control", "max-age=99999999999999999999999")], (MAX, "max-age"), id="huge-max-age-saturates"
        ),
    ],
)
def test_lifetime_from_max_age(headers: Headers, expected: tuple[float, str]) -> None:
    assert fresh(headers) == expected


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        pytest.param(
            [("Date", NOW_DATE), ("Expires", "Sat, 01 Mar 2025 12:10:00 GMT")],
            (600.0, "expires"),
            id="expires-minus-date",
        ),
        pytest.param([("Expires", "Sat, 01 Mar 2025 12:10:00 GMT")], (600.0, "expires"), id="date-defaults-to-now"),
        pytest.param(
            [("Date", "garbage"), ("Expires", "Sat, 01 Mar 2025 12:10:00 GMT")],
            (600.0, "expires"),
            id="invalid-date-is-now",
        ),
        pytest.param(
            # the IdP's clock runs an hour ahead: Expires - Date still gives its intended lifetime
            [("Date", "Sat, 01 Mar 2025 13:00:00 GMT"), ("Expires", "Sat, 01 Mar 2025 13:10:00 GMT")],
            (600.0, "expires"),
            id="skewed-server-clock",
        ),
        pytest.param([("Expires", "Sunday, 01-Mar-25 12:10:00 GMT")], (600.0, "expires"), id="rfc850-expires"),
        pytest.param([("Expires", "Sat Mar  1 12:10:00 2025")], (600.0, "expires"), id="asctime-expires"),
    ],
)
def test_lifetime_from_expires(headers: Headers, expected: tuple[float, str]) -> None:
    assert fresh(headers) == expected


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        pytest.param(
            [("Date", NOW_DATE), ("Last-Modified", "Sat, 01 Mar 2025 02:00:00 GMT")],
            (3600.0, "heuristic"),
            id="ten-percent",
        ),
        pytest.param(
            [("Last-Modified", "Sat, 01 Mar 2025 02:00:00 GMT")], (3600.0, "heuristic"), id="date-defaults-to-now"
        ),
        pytest.param([("Last-Modified", "Fri, 28 Feb 2025 12:00:00 GMT")], (8640.0, "heuristic"), id="one-day-old"),
        pytest.param([("Last-Modified", "Sat, 01 Mar 2025 11:59:00 GMT")], (MIN, "heuristic"), id="clamped-up"),
        pytest.param([("Last-Modified", "Thu, 01 Jan 1970 00:00:00 GMT")], (MAX, "heuristic"), id="clamped-down"),
        pytest.param([("Last-Modified", NOW_DATE)], (300.0, "default"), id="same-as-date-unusable"),
        pytest.param([("Last-Modified", "Sat, 01 Mar 2025 13:00:00 GMT")], (300.0, "default"), id="future-unusable"),
        pytest.param([("Last-Modified", "yesterday")], (300.0, "default"), id="invalid-unusable"),
    ],
)
def test_lifetime_from_heuristic(headers: Headers, expected: tuple[float, str]) -> None:
    assert fresh(headers) == expected


def test_default_ttl_when_nothing_usable() -> None:
    assert fresh([("Content-Type", "application/json")], default_ttl=1234.0) == (1234.0, "default")


# -- "revalidate at min_ttl": no-cache, no-store, max-age=0, used-up lifetimes ---------------------


@pytest.mark.parametrize(
    ("headers", "no_store"),
    [
        pytest.param([("Cache-Control", "no-cache")], False, id="no-cache"),
        pytest.param([("Cache-Control", "No-Cache, max-age=600")], False, id="no-cache-beats-max-age"),
        pytest.param([("Cache-Control", 'no-cache="Set-Cookie"')], False, id="qualified-no-cache"),
        pytest.param([("Cache-Control", "no-store")], True, id="no-store"),
        pytest.param([("Cache-Control", "max-age=600"), ("Cache-Control", "no-store")], True, id="no-store-other-line"),
        pytest.param([("Cache-Control", "max-age=0")], False, id="max-age-zero"),
        pytest.param([("Cache-Control", "max-age=-1")], False, id="negative-max-age"),
        pytest.param([("Cache-Control", "max-age=abc")], False, id="non-numeric-max-age"),
        pytest.param([("Cache-Control", "max-age=1.5")], False, id="fractional-max-age"),
        pytest.param([("Cache-Control", "max-age")], False, id="max-age-without-value"),
        pytest.param([("Cache-Control", "max-age=600, max-age=x")], False, id="duplicate-with-invalid"),
        pytest.param([("Cache-Control", "max-age=600"), ("Age", "600")], False, id="age-eats-max-age"),
        pytest.param([("Expires", "0")], False, id="expires-zero"),
        pytest.param([("Expires", "-1")], False, id="expires-minus-one"),
        pytest.param([("Expires", "tomorrow")], False, id="expires-invalid"),
        pytest.param([("Expires", "Sun, 06 Nov 1994 08:49:37 GMT")], False, id="expires-in-past"),
        pytest.param([("Date", NOW_DATE), ("Expires", NOW_DATE)], False, id="expires-equals-date"),
        pytest.param(
            [("Expires", "Sat, 01 Mar 2025 12:10:00 GMT"), ("Expires", "Sat, 01 Mar 2025 12:20:00 GMT")],
            False,
            id="conflicting-expires-stale",
        ),
        pytest.param([("Expires", "Sat, 01 Mar 2025 12:10:00 GMT"), ("Age", "601")], False, id="age-eats-expires"),
    ],
)
def test_revalidate_at_min_ttl(headers: Headers, no_store: bool) -> None:
    result = compute_freshness(headers, now=NOW, min_ttl=45.0, max_ttl=MAX)
    assert (result.ttl, result.source, result.no_store) == (45.0, "no-cache", no_store)


# -- §4.2.3 Age ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        pytest.param([("Cache-Control", "max-age=600"), ("Age", "100")], (500.0, "max-age"), id="subtracted"),
        pytest.param([("Cache-Control", "max-age=600"), ("age", " 100 ")], (500.0, "max-age"), id="spaces"),
        pytest.param([("Cache-Control", "max-age=600"), ("Age", "-100")], (600.0, "max-age"), id="negative-ignored"),
        pytest.param([("Cache-Control", "max-age=600"), ("Age", "1.5")], (600.0, "max-age"), id="fraction-ignored"),
        pytest.param([("Cache-Control", "max-age=600"), ("Age", "soon")], (600.0, "max-age"), id="junk-ignored"),
        pytest.param(
            [("Cache-Control", "max-age=600"), ("Age", "100"), ("Age", "200")], (400.0, "max-age"), id="repeat-largest"
        ),
        pytest.param(
            [("Cache-Control", "max-age=600"), ("Age", "100, x")], (500.0, "max-age"), id="list-partly-invalid"
        ),
        pytest.param([("Cache-Control", "max-age=600"), ("Age", "590")], (MIN, "max-age"), id="clamped-to-min"),
        pytest.param([("Expires", "Sat, 01 Mar 2025 12:10:00 GMT"), ("Age", "60")], (540.0, "expires"), id="expires"),
        pytest.param(
            [("Last-Modified", "Sat, 01 Mar 2025 02:00:00 GMT"), ("Age", "600")], (3000.0, "heuristic"), id="heuristic"
        ),
        pytest.param([("Age", "100")], (200.0, "default"), id="default"),
        pytest.param([("Age", "1000")], (MIN, "default"), id="default-used-up-clamps"),
    ],
)
def test_age_is_subtracted(headers: Headers, expected: tuple[float, str]) -> None:
    assert fresh(headers) == expected


# -- clamps -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("max_age", "min_ttl", "max_ttl", "expected"),
    [
        pytest.param(10, 30.0, 3600.0, 30.0, id="below-min"),
        pytest.param(100, 30.0, 3600.0, 100.0, id="inside"),
        pytest.param(30, 30.0, 3600.0, 30.0, id="at-min"),
        pytest.param(3600, 30.0, 3600.0, 3600.0, id="at-max"),
        pytest.param(7200, 30.0, 3600.0, 3600.0, id="above-max"),
        pytest.param(2**40, 30.0, 86400.0, 86400.0, id="saturated"),
        pytest.param(100, 60.0, 60.0, 60.0, id="min-equals-max"),
        pytest.param(100, 120.0, 60.0, 120.0, id="inverted-bounds-min-wins"),
    ],
)
def test_clamped_into_operator_bounds(max_age: int, min_ttl: float, max_ttl: float, expected: float) -> None:
    headers = [("Cache-Control", f"max-age={max_age}")]
    assert fresh(headers, min_ttl=min_ttl, max_ttl=max_ttl)[0] == expected


# -- validators ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        pytest.param([], None, id="absent"),
        pytest.param([("ETag", '"abc"')], '"abc"', id="strong"),
        pytest.param([("etag", 'W/"abc"')], 'W/"abc"', id="weak-prefix-kept"),
        pytest.param([("ETag", '""')], '""', id="empty-opaque-tag"),
        pytest.param([("ETag", '  "abc"  ')], '"abc"', id="ows-stripped"),
        pytest.param([("ETag", "abc")], None, id="unquoted"),
        pytest.param([("ETag", 'w/"abc"')], None, id="lowercase-weak"),
        pytest.param([("ETag", '"a"b"')], None, id="inner-quote"),
        pytest.param([("ETag", '"a b"')], None, id="inner-space"),
        pytest.param([("ETag", '"abc')], None, id="unterminated"),
        pytest.param([("ETag", '"é"')], None, id="obs-text"),
        pytest.param([("ETag", '"a", "b"')], None, id="list"),
        pytest.param([("ETag", '"a"'), ("ETag", '"a"')], '"a"', id="repeated-same"),
        pytest.param([("ETag", '"a"'), ("ETag", '"b"')], None, id="repeated-conflicting"),
    ],
)
def test_etag(headers: Headers, expected: str | None) -> None:
    assert compute_freshness(headers, now=NOW, min_ttl=MIN, max_ttl=MAX).etag == expected


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        pytest.param([], None, id="absent"),
        pytest.param([("Last-Modified", "Sun, 06 Nov 1994 08:49:37 GMT")], "Sun, 06 Nov 1994 08:49:37 GMT", id="imf"),
        pytest.param(
            [("Last-Modified", "Sunday, 06-Nov-94 08:49:37 GMT")], "Sunday, 06-Nov-94 08:49:37 GMT", id="verbatim"
        ),
        pytest.param([("Last-Modified", "yesterday")], None, id="invalid"),
        pytest.param(
            [("Last-Modified", "Sun, 06 Nov 1994 08:49:37 GMT"), ("Last-Modified", "Mon, 07 Nov 1994 08:49:37 GMT")],
            None,
            id="conflicting",
        ),
    ],
)
def test_last_modified(headers: Headers, expected: str | None) -> None:
    assert compute_freshness(headers, now=NOW, min_ttl=MIN, max_ttl=MAX).last_modified == expected


def test_validators_survive_no_store() -> None:
    headers = [("Cache-Control", "no-store"), ("ETag", '"v1"'), ("Last-Modified", "Sun, 06 Nov 1994 08:49:37 GMT")]
    result = compute_freshness(headers, now=NOW, min_ttl=MIN, max_ttl=MAX)
    assert (result.no_store, result.etag, result.last_modified) == (True, '"v1"', "Sun, 06 Nov 1994 08:49:37 GMT")


@pytest.mark.parametrize(
    ("etag", "last_modified", "expected"),
    [
        (None, None, {}),
        ('"v1"', None, {"If-None-Match": '"v1"'}),
        ('W/"v1"', None, {"If-None-Match": 'W/"v1"'}),
        (None, "Sun, 06 Nov 1994 08:49:37 GMT", {"If-Modified-Since": "Sun, 06 Nov 1994 08:49:37 GMT"}),
        (
            '"v1"',
            "Sun, 06 Nov 1994 08:49:37 GMT",
            {"If-None-Match": '"v1"', "If-Modified-Since": "Sun, 06 Nov 1994 08:49:37 GMT"},
        ),
    ],
)
def test_conditional_headers(etag: str | None, last_modified: str | None, expected: dict[str, str]) -> None:
    assert conditional_headers(etag, last_modified) == expected


def test_freshness_is_frozen_struct() -> None:
    result = compute_freshness([], now=NOW, min_ttl=MIN, max_ttl=MAX)
    with pytest.raises(AttributeError):
        result.ttl = 1.0  # type: ignore[misc]


# -- §4.3.4 a 304 updates the stored headers -----------------------------------------------------

STORED: Headers = [
    ("cache-control", "max-age=20000"),
    ("etag", '"v1"'),
    ("last-modified", "Sun, 06 Nov 1994 08:49:37 GMT"),
]


def fresh_after_304(update: Headers, stored: Headers = STORED) -> tuple[float, str, str | None]:
    result = compute_freshness(merge_not_modified(stored, update), now=NOW, min_ttl=MIN, max_ttl=MAX)
    return result.ttl, result.source, result.etag


@pytest.mark.parametrize(
    ("update", "expected"),
    [
        pytest.param([("Date", NOW_DATE)], (20000.0, "max-age", '"v1"'), id="bare-304-keeps-max-age-and-etag"),
        pytest.param([("Cache-Control", "max-age=600")], (600.0, "max-age", '"v1"'), id="its-max-age-replaces"),
        pytest.param([("CACHE-CONTROL", "no-cache")], (MIN, "no-cache", '"v1"'), id="names-case-insensitive"),
        pytest.param([("ETag", '"v2"')], (20000.0, "max-age", '"v2"'), id="new-etag-replaces"),
        pytest.param([("Age", "500")], (19500.0, "max-age", '"v1"'), id="its-age-counts"),
        # Cache-Control replaced wholesale: without max-age, the stored Expires is not there either
        pytest.param(
            [("Cache-Control", "public"), ("Expires", "Sat, 01 Mar 2025 13:00:00 GMT"), ("Date", NOW_DATE)],
            (3600.0, "expires", '"v1"'),
            id="cache-control-without-max-age-falls-to-expires",
        ),
    ],
)
def test_a_304_updates_the_stored_headers(update: Headers, expected: tuple[float, str, str | None]) -> None:
    assert fresh_after_304(update) == expected


def test_a_stored_expires_counts_from_the_304s_date() -> None:
    stored: Headers = [("expires", "Sat, 01 Mar 2025 18:00:00 GMT")]
    assert fresh_after_304([("Date", NOW_DATE)], stored) == (6 * 3600.0, "expires", None)
    assert fresh_after_304([], stored) == (6 * 3600.0, "expires", None)  # no Date: now
    assert fresh_after_304([("Expires", "Sat, 01 Mar 2025 12:10:00 GMT")], stored)[:2] == (600.0, "expires")


def test_every_line_of_a_repeated_field_is_replaced() -> None:
    stored: Headers = [("Cache-Control", "max-age=20000"), ("Cache-Control", "public")]
    assert merge_not_modified(stored, [("cache-control", "max-age=60")]) == (("cache-control", "max-age=60"),)


def test_only_cache_control_and_expires_are_kept_for_revalidation() -> None:
    headers = [
        ("Cache-Control", "max-age=60"),
        ("Expires", NOW_DATE),
        ("Date", NOW_DATE),
        ("Age", "5"),
        ("ETag", '"v1"'),
        ("Content-Type", "application/json"),
    ]
    assert kept_for_revalidation(headers) == (("cache-control", "max-age=60"), ("expires", NOW_DATE))


def test_oversized_kept_fields_are_dropped() -> None:
    assert kept_for_revalidation([("cache-control", "x" * 5000)]) == ()
