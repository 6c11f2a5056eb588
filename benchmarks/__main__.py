"""Run the benchmark cases, print one table, optionally write every raw figure as JSON."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
import traceback
from collections import Counter
from pathlib import Path
from typing import Any

from . import CASES, load
from ._common import CaseResult, Row, machine_info

_COLUMNS = ("case", "backend", "metric", "value", "vs (same run)", "ratio", "target", "result")


def _number(value: float | None) -> str:
    if value is None:
        return "-"
    if isinstance(value, int) or value == 0 or abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.3g}"


def _cells(row: Row) -> tuple[str, ...]:
    value = "-" if row.value is None else f"{_number(row.value)} {row.unit}".strip()
    ratio = "" if row.ratio is None else f"{row.ratio:.2f}x"
    return (row.case, row.backend, row.metric, value, row.compared, ratio, row.target, row.status)


def _table(rows: list[Row]) -> str:
    lines = [_COLUMNS, *(_cells(r) for r in rows)]
    widths = [max(len(line[i]) for line in lines) for i in range(len(_COLUMNS))]
    rendered = ["  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)) for line in lines]
    rendered.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(r.rstrip() for r in rendered)


def _run_case(name: str, quick: bool) -> tuple[CaseResult, float]:
    began = time.perf_counter()
    try:
        result: CaseResult = load(name).run(quick)
    except Exception as exc:  # one broken case must not hide the others' figures
        result = CaseResult(name)
        result.add(Row(result.name, "-", f"{type(exc).__name__}: {exc}"[:160], None, "", status="ERROR"))
        result.raw["traceback"] = traceback.format_exc()
        print(result.raw["traceback"], file=sys.stderr)
    return result, time.perf_counter() - began


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="smaller sizes and fewer repeats (< 60 s)")
    parser.add_argument("--json", type=Path, metavar="FILE", help="write raw figures, ratios and machine info")
    parser.add_argument("--only", nargs="+", choices=CASES, metavar="CASE", help=f"run only these: {', '.join(CASES)}")
    args = parser.parse_args(argv)
    # failed refreshes are part of some cases; their log lines would bury the table
    logging.getLogger("jwks_cache").setLevel(logging.ERROR)
    machine = machine_info()
    print(
        f"jwks-cache benchmarks ({'quick' if args.quick else 'full'}): {machine['cpu_model']} x{machine['cpu_count']}, "
        f"Python {machine['python'].split()[0]}, {machine['platform']}, load {machine['load_average'][0]:.2f}",
        flush=True,
    )
    started = time.perf_counter()
    results: dict[str, Any] = {}
    rows: list[Row] = []
    notes: list[str] = []
    for name in args.only or list(CASES):
        print(f"  running {name} ...", end="", flush=True)
        result, seconds = _run_case(name, args.quick)
        print(f" {seconds:.1f} s", flush=True)
        results[name] = result.as_json() | {"seconds": seconds}
        rows += result.rows
        notes += result.notes
    total = time.perf_counter() - started
    print()
    print(_table(rows))
    for note in notes:
        print(f"note: {note}")
    summary = Counter(row.status for row in rows)
    print(f"\n{', '.join(f'{k} {v}' for k, v in sorted(summary.items()))}; {total:.1f} s")
    if args.json is not None:
        machine["load_average_after"] = os.getloadavg()
        report = {
            "mode": "quick" if args.quick else "full",
            "seconds": total,
            "machine": machine,
            "summary": dict(summary),
            "cases": results,
        }
        args.json.write_text(json.dumps(report, indent=2, default=str) + "\n", encoding="utf-8")
        print(f"wrote {args.json}")
    return 1 if summary.get("ERROR") else 0


if __name__ == "__main__":
    sys.exit(main())
