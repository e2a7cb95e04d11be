"""Run the benchmarks and print their ratios (``make bench``).

Every ``bench_*.py`` module next to this file exposes ``run(quick=False)`` returning a
list of :class:`_timing.Result`. ``--write-docs`` replaces the results table of
``docs/benchmarks.md`` (between its ``<!-- bench:begin -->`` / ``<!-- bench:end -->``
markers) with the figures just measured.
"""

from __future__ import annotations

import argparse
import datetime
import importlib
import os
import platform
import re
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from _timing import Result  # noqa: E402

BEGIN, END = "<!-- bench:begin -->", "<!-- bench:end -->"


def discover() -> list[str]:
    return sorted(p.stem for p in HERE.glob("bench_*.py"))


def run_all(names: list[str], quick: bool) -> list[Result]:
    results: list[Result] = []
    for name in names:
        module = importlib.import_module(name)
        print(f"running {name} ...", flush=True)
        results.extend(module.run(quick=quick))
    return results


def _fmt_details(details: dict[str, float]) -> str:
    return ", ".join(f"{k} {v:.3g}" for k, v in details.items())


def table(results: list[Result]) -> str:
    lines = [
        "| benchmark | ratio (min–max over rounds) | goal | status | details |",
        "|---|---:|---:|---|---|",
    ]
    for r in results:
        goal = "—" if r.goal is None else f"≤ {r.goal:g}×"
        details = _fmt_details(r.details) + (f"; {r.note}" if r.note else "")
        spread = "" if r.spread is None else f" ({r.spread[0]:.2f}–{r.spread[1]:.2f})"
        lines.append(
            f"| {r.name} | {r.ratio:.2f}×{spread} | {goal} | {r.status} | {details} |"
        )
    return "\n".join(lines)


def machine() -> str:
    import numpy

    versions = [f"Python {platform.python_version()}", f"numpy {numpy.__version__}"]
    for mod in ("jax", "numpyro", "torch", "pyro"):
        try:
            versions.append(f"{mod} {importlib.import_module(mod).__version__}")
        except ImportError:
            pass
    return f"{platform.machine()}, {os.cpu_count()} cores; " + ", ".join(versions)


def write_docs(path: Path, results: list[Result]) -> None:
    text = path.read_text()
    if BEGIN not in text or END not in text:
        raise SystemExit(f"{path} lacks the {BEGIN} / {END} markers")
    stamp = datetime.date.today().isoformat()
    block = f"{BEGIN}\nMeasured {stamp} on {machine()}.\n\n{table(results)}\n{END}"
    new = re.sub(
        re.escape(BEGIN) + ".*?" + re.escape(END), lambda _: block, text, flags=re.S
    )
    path.write_text(new)
    print(f"updated {path}")


def main(argv=None) -> list[Result]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", help="benchmark modules (default: all)")
    parser.add_argument(
        "--quick", action="store_true", help="tiny repeats: a smoke check"
    )
    parser.add_argument("--write-docs", type=Path, help="update this benchmarks page")
    args = parser.parse_args(argv)
    names = args.names or discover()
    unknown = sorted(set(names) - set(discover()))
    if unknown:
        parser.error(f"unknown benchmarks {unknown}; available: {discover()}")
    results = run_all(names, args.quick)
    print()
    print(table(results))
    if args.write_docs:
        write_docs(args.write_docs, results)
    return results


if __name__ == "__main__":
    main()
