"""One nesting bound for every parser of untrusted bytes, checked before the parser recurses.

msgspec, ``json`` and ``tomllib`` recurse once per nesting level and guard only with Python's
recursion limit, so a few kilobytes of ``[[[[...`` raise ``RecursionError`` (a builtin nobody
expects from a parser, which ends whole task groups) or, on a small thread stack, overflow the C
stack before the guard fires. msgspec offers no depth option (its maintainers leave it to
``sys.setrecursionlimit``), so each parser first asks this module, whose scans are loops, never
recursion, and O(n), mostly in C primitives.

Real documents nest 3 to 5 levels (a JWK Set with ``x5c`` arrays is 4, a control-plane body 3);
``MAX_DEPTH`` leaves room for rich token claims while keeping every decode far from the limit.
The depth counted is the one a decoder would reach: the arrays and objects (msgpack arrays and
maps) open at one point of the input, even if the input later turns out malformed.
"""

from __future__ import annotations

import re
from array import array
from itertools import accumulate
from typing import Final

__all__ = ["MAX_DEPTH", "MAX_MSGPACK_VALUES", "TOO_DEEP", "json_problem", "msgpack_problem", "toml_problem"]

#: Arrays/objects that may be open at once in any document jwks-cache parses (``[]`` is depth 1).
MAX_DEPTH: Final = 32
#: How every parser words the refusal, after naming the document.
TOO_DEEP: Final = f"nests deeper than {MAX_DEPTH} levels"

_NOT_BRACKETS: Final = bytes(c for c in range(256) if c not in b"[]{}")
#: openers become +1 and closers -1 (0xFF, as a signed byte) for the running sum
_SIGNS: Final = bytes.maketrans(b"[{]}", b"\x01\x01\xff\xff")
_CHUNK: Final = 4096  # brackets summed per step, so a deep prefix is refused without reading on
#: what can hide a bracket in TOML: comments and the four kinds of string (an unterminated one
#: runs to the end of its line, or of the input for multi-line ones; tomllib refuses it anyway)
_TOML_HIDING: Final = re.compile(
    rb'"""(?:[^"\\]|\\.|"(?!""))*+(?:"""|\Z)'
    rb"|'''(?:[^']|'(?!''))*+(?:'''|\Z)"
    rb'|"(?:[^"\\\n]|\\.)*+"?'
    rb"|'[^'\n]*+'?"
    rb"|#[^\n]*+",
    re.DOTALL,
)


def json_problem(data: bytes | bytearray | memoryview | str, bound: int = MAX_DEPTH) -> str | None:
    """``TOO_DEEP`` if JSON ``data`` opens more than ``bound`` arrays/objects at once, else None.

    Brackets inside strings do not count. Never raises: bytes that are not JSON at all are left
    to the decoder to refuse.
    """
    if type(data) is not bytes:  # tokens and documents are bytes: skip the conversions
        data = data.encode("utf-8", "surrogatepass") if isinstance(data, str) else bytes(data)
    raw: bytes = data
    if raw.count(b"[") + raw.count(b"{") <= bound:
        return None  # the hot path (every token, most documents): too few brackets to nest deeper
    if b"\\" in raw:
        # backslashes pair up from the left, so dropping escaped backslashes first leaves exactly
        # the escaped quotes, which go next: every quote left then starts or ends a string
        raw = raw.replace(b"\\\\", b"").replace(b'\\"', b"")
    # an unterminated string runs to the end, which the decoder reaches only to refuse it
    outside = b"".join(raw.split(b'"')[::2])
    return TOO_DEEP if _brackets_too_deep(outside, bound) else None


def toml_problem(data: bytes, bound: int = MAX_DEPTH) -> str | None:
    """``TOO_DEEP`` if TOML ``data`` nests inline arrays/tables more than ``bound`` deep, else None.

    Dotted keys (``a.b.c = 1``) nest the result too, but ``tomllib`` builds those without
    recursion, so only brackets outside strings and comments count (table headers included).
    """
    if data.count(b"[") + data.count(b"{") <= bound:
        return None
    return TOO_DEEP if _brackets_too_deep(_TOML_HIDING.sub(b"", data), bound) else None


def _brackets_too_deep(text: bytes, bound: int) -> bool:
    """Whether the running depth of ``text``'s brackets ever passes ``bound``.

    Bracket kinds are not matched: a decoder stops at the first mismatch, so counting on past it
    can only refuse input the decoder would refuse anyway. Dropping every empty pair first (one
    C pass that leaves most documents a few brackets long) keeps the other depths as they were
    and lowers the deepest by at most one, so only a pruned peak of exactly ``bound`` needs the
    whole sequence summed.
    """
    signs = text.translate(_SIGNS, _NOT_BRACKETS)
    pruned = signs.replace(b"\x01\xff", b"")
    if _peak_above(pruned, bound):
        return True
    return _peak_above(pruned, bound - 1) and _peak_above(signs, bound)


def _peak_above(signs: bytes, bound: int) -> bool:
    """Whether a running sum of ``signs`` (+1/-1 bytes), starting at 0, passes ``bound``; summed in C."""
    if bound < 0:
        return True
    depth = 0
    for start in range(0, len(signs), _CHUNK):
        chunk = array("b", signs[start : start + _CHUNK])
        if max(accumulate(chunk, initial=depth)) > bound:
            return True
        depth += sum(chunk)
    return False


# --- msgpack ---------------------------------------------------------------------------------

#: values a msgpack walk reads at most: a snapshot holds a few dozen, and the walk is Python
MAX_MSGPACK_VALUES: Final = 10_000
#: bytes that can start a msgpack array or map (fixmap, fixarray, array16/32, map16/32)
_MSGPACK_CONTAINER_BYTES: Final = bytes([*range(0x80, 0xA0), 0xDC, 0xDD, 0xDE, 0xDF])
_SLOW: Final = -100  # a first byte the walk's table cannot settle alone


def _first_byte_table() -> tuple[int, ...]:
    """For each first byte: the bytes after it (>= 0), -(children + 1) for a fixarray/fixmap, or _SLOW."""
    table = [_SLOW] * 256
    for first in (*range(0x80), *range(0xE0, 0x100), 0xC0, 0xC2, 0xC3):
        table[first] = 0  # fixint, nil, false, true
    for first in range(0xA0, 0xC0):
        table[first] = first & 0x1F  # fixstr
    for first in range(0x80, 0x90):
        table[first] = -(2 * (first & 0x0F) + 1)  # fixmap: a key and a value per entry
    for first in range(0x90, 0xA0):
        table[first] = -((first & 0x0F) + 1)  # fixarray
    fixed = {0xCA: 4, 0xCB: 8, 0xCC: 1, 0xCD: 2, 0xCE: 4, 0xCF: 8, 0xD0: 1, 0xD1: 2, 0xD2: 4, 0xD3: 8}
    fixext = {0xD4: 2, 0xD5: 3, 0xD6: 5, 0xD7: 9, 0xD8: 17}  # a type byte and the data
    for first, after in (*fixed.items(), *fixext.items()):
        table[first] = after
    return tuple(table)


_AFTER_FIRST: Final = _first_byte_table()
#: first byte -> (size of the length field, bytes between it and the data): str, bin, ext
_SIZED: Final[dict[int, tuple[int, int]]] = {
    0xD9: (1, 0), 0xDA: (2, 0), 0xDB: (4, 0),  # str8/16/32
    0xC4: (1, 0), 0xC5: (2, 0), 0xC6: (4, 0),  # bin8/16/32
    0xC7: (1, 1), 0xC8: (2, 1), 0xC9: (4, 1),  # ext8/16/32: a type byte after the length
}  # fmt: skip
#: first byte -> (size of the count field, values per counted entry): array16/32, map16/32
_COUNTED: Final[dict[int, tuple[int, int]]] = {0xDC: (2, 1), 0xDD: (4, 1), 0xDE: (2, 2), 0xDF: (4, 2)}


def msgpack_problem(data: bytes | bytearray | memoryview, bound: int = MAX_DEPTH) -> str | None:
    """Why msgpack ``data`` must not be decoded (too deep, or too many values to walk); None if fine.

    Walks the first object's type bytes with an explicit stack of values still to read in each
    open array or map. Every value consumes at least one byte, so however large the counts a
    header claims, the walk ends at the data's end; it also stops at a byte that is not msgpack
    (the decoder refuses both). The walk is Python, so it reads at most ``MAX_MSGPACK_VALUES``.
    """
    raw = bytes(data)
    if len(raw) - len(raw.translate(None, _MSGPACK_CONTAINER_BYTES)) <= bound:
        return None  # too few bytes that could open a container: snapshots we wrote end here
    pending = [1]  # values still to read, per open container; the bottom one is the document
    at, size, table = 0, len(raw), _AFTER_FIRST
    for _ in range(MAX_MSGPACK_VALUES):
        if at >= size:
            return None
        first = raw[at]
        at += 1
        pending[-1] -= 1
        after = table[first]
        if after >= 0:
            at += after
        else:
            children = -after - 1
            if after == _SLOW:
                if first in _SIZED:
                    width, gap = _SIZED[first]
                    at += width + gap + int.from_bytes(raw[at : at + width])
                    children = -1
                elif first in _COUNTED:
                    width, per = _COUNTED[first]
                    children = per * int.from_bytes(raw[at : at + width])
                    at += width
                else:
                    return None  # 0xC1, never used: the decoder stops here
            if children >= 0:
                if len(pending) > bound:  # this container is at depth len(pending)
                    return TOO_DEEP
                if children:
                    pending.append(children)
                    continue
        while not pending[-1]:
            pending.pop()
            if not pending:
                return None
    return f"holds more than {MAX_MSGPACK_VALUES} values"
