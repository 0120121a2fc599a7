"""`golf check`: static TTT-compliance check of a parameter-golf submission script.

The script is read, never run: code-golfed payloads are unwrapped statically (`unwrap.py`), then an
abstract interpreter follows validation data through the script and orders gradient steps against
scoring passes (`analysis.py`, whose docstring explains the rules, the approach and its limits).

Verdicts: `legal` (validation data found, a scoring pass found, no violation, nothing hidden),
`illegal` (at least one finding), `unknown` (anything the checker could not see or follow). The verdict
is for the default run (environment switches at their literal defaults); `switches` gives the verdict
with each gating switch flipped (`{"TTT_ENABLED=1": "illegal"}`). Exit codes
follow `EXIT_CODES`; unreadable input (missing, not UTF-8, not Python even after unwrapping) raises
`GolfError`, which the command line turns into exit status 3.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import traceback
from pathlib import Path

from golf.check.rules import analyse
from golf.check.unwrap import parse_source, read_source, unwrap
from golf.errors import GolfError

EXIT_CODES = {"legal": 0, "illegal": 1, "unknown": 2}
EXIT_UNREADABLE = 3


def check_script(path: str | os.PathLike) -> dict:
    """Check one script: {"verdict", "findings": [{"rule", "function", "lines", "explanation"}],
    "reason", "switches", "unwrapped"}. Raises GolfError if the file cannot be read or is not Python.

    Any other failure inside the checker is a bug of ours, not a verdict on the script: it comes back
    as `unknown` with the error named in the reason, never as a traceback (whose exit status, 1, would
    read as `illegal`).
    """
    label = str(path)
    tree = parse_source(read_source(path), label)
    try:
        unwrapped = unwrap(tree, label)
        report = analyse(unwrapped.tree, unwrapped.reasons)
        report["unwrapped"] = unwrapped.unwrapped
        return report
    except (GolfError, KeyboardInterrupt):
        raise
    except Exception as exc:  # noqa: BLE001 - see the docstring
        where = traceback.extract_tb(exc.__traceback__)[-1]
        reason = (
            f"internal error in golf check ({type(exc).__name__}: {exc} at "
            f"{os.path.basename(where.filename)}:{where.lineno}); the script could not be analysed"
        )
        return {"verdict": "unknown", "findings": [], "reason": reason, "switches": {}, "unwrapped": False}


def scripts_in(paths: list[str]) -> list[str]:
    """The scripts named: files as given, directories searched for *.py (sorted, hidden folders skipped)."""
    out: list[str] = []
    for path in paths:
        if os.path.isdir(path):
            found = sorted(
                str(p)
                for p in Path(path).rglob("*.py")
                if not any(
                    part.startswith(".") or part == "__pycache__" for part in p.relative_to(path).parts
                )
            )
            if not found:
                raise GolfError(f"{path}: no .py files in this directory")
            out.extend(found)
        else:
            out.append(path)
    return out


class _Parser(argparse.ArgumentParser):
    """argparse that reports usage errors as GolfError (exit 3) instead of exiting with 2 ('unknown')."""

    def error(self, message: str):
        raise GolfError(f"golf check: {message}")


def _print_report(script: str, report: dict) -> None:
    wrapped = " (unwrapped payload)" if report["unwrapped"] else ""
    print(f"{report['verdict']}: {script}{wrapped}")
    print(f"  reason: {report['reason']}")
    for f in report["findings"]:
        lines = ", ".join(map(str, f["lines"]))
        print(f"  [{f['rule']}] {f['function']} (lines {lines}): {f['explanation']}")


def main(argv: list[str]) -> int:
    """`golf check SCRIPT.py|DIR ... [--json]`; returns the exit code.

    One script: 0 legal, 1 illegal, 2 unknown, 3 unreadable (one `golf: error:` line). Several scripts
    (or a directory): one table row (or, with --json, one JSON line) each, an unreadable one reported as
    `unreadable` with its error; the exit code is 1 if any is illegal, else 3 if any is unreadable, else
    2 if any is unknown, else 0.
    """
    parser = _Parser(prog="golf check", description="Static TTT-legality check of submission scripts.")
    parser.add_argument(
        "scripts",
        nargs="+",
        metavar="SCRIPT",
        help="train_gpt.py-like scripts or directories of them (never executed)",
    )
    parser.add_argument(
        "--json", action="store_true", help="print one JSON object (one JSON line per script for several)"
    )
    try:
        args = parser.parse_args(argv)
        scripts = scripts_in(args.scripts)
        if len(scripts) == 1 and not os.path.isdir(args.scripts[0]):
            report = check_script(scripts[0])
    except SystemExit as exc:  # --help
        return int(exc.code or 0)
    except GolfError as exc:
        print(f"golf: error: {exc}", file=sys.stderr)
        return EXIT_UNREADABLE
    if len(scripts) == 1 and not os.path.isdir(args.scripts[0]):
        if args.json:
            print(json.dumps({"script": scripts[0], **report}))
        else:
            _print_report(scripts[0], report)
        return EXIT_CODES[report["verdict"]]
    codes = set()
    width = max(len(s) for s in scripts)
    if not args.json:
        print(f"{'verdict':10s} {'seconds':>7s}  {'script':{width}s}  reason")
    for script in scripts:
        t0 = time.perf_counter()
        try:
            report = check_script(script)
        except GolfError as exc:
            report = {
                "verdict": "unreadable",
                "findings": [],
                "reason": str(exc),
                "switches": {},
                "unwrapped": False,
            }
        seconds = time.perf_counter() - t0
        codes.add(EXIT_CODES.get(report["verdict"], EXIT_UNREADABLE))
        if args.json:
            print(json.dumps({"script": script, **report, "seconds": round(seconds, 3)}), flush=True)
        else:
            print(
                f"{report['verdict']:10s} {seconds:7.2f}  {script:{width}s}  {report['reason']}", flush=True
            )
    for code in (EXIT_CODES["illegal"], EXIT_UNREADABLE, EXIT_CODES["unknown"]):
        if code in codes:
            return code
    return EXIT_CODES["legal"]
