"""`golf check`: static TTT-compliance check of a parameter-golf submission script.

The script is read, never run: code-golfed payloads are unwrapped statically (`unwrap.py`), then an
abstract interpreter follows validation data through the script and orders gradient steps against
scoring passes (`analysis.py`, whose docstring explains the rules, the approach and its limits).

Verdicts: `legal` (validation data found, a scoring pass found, no violation, nothing hidden),
`illegal` (at least one finding), `unknown` (anything the checker could not see or follow). Exit codes
follow `EXIT_CODES`; unreadable input (missing, not UTF-8, not Python even after unwrapping) raises
`GolfError`, which the command line turns into exit status 3.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from golf.check.rules import analyse
from golf.check.unwrap import parse_source, read_source, unwrap
from golf.errors import GolfError

EXIT_CODES = {"legal": 0, "illegal": 1, "unknown": 2}
EXIT_UNREADABLE = 3


def check_script(path: str | os.PathLike) -> dict:
    """Check one script: {"verdict", "findings": [{"rule", "function", "lines", "explanation"}],
    "reason", "unwrapped"}. Raises GolfError if the file cannot be read or parsed."""
    label = str(path)
    tree = parse_source(read_source(path), label)
    unwrapped = unwrap(tree, label)
    report = analyse(unwrapped.tree, unwrapped.reasons)
    report["unwrapped"] = unwrapped.unwrapped
    return report


class _Parser(argparse.ArgumentParser):
    """argparse that reports usage errors as GolfError (exit 3) instead of exiting with 2 ('unknown')."""

    def error(self, message: str):
        raise GolfError(f"golf check: {message}")


def main(argv: list[str]) -> int:
    """`golf check SCRIPT.py [--json]`; returns the exit code (0 legal, 1 illegal, 2 unknown, 3 unreadable)."""
    parser = _Parser(prog="golf check", description="Static TTT-legality check of a submission script.")
    parser.add_argument("script", help="the train_gpt.py-like script to check (it is never executed)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    try:
        args = parser.parse_args(argv)
        report = check_script(args.script)
    except SystemExit as exc:  # --help
        return int(exc.code or 0)
    except GolfError as exc:
        print(f"golf: error: {exc}", file=sys.stderr)
        return EXIT_UNREADABLE
    if args.json:
        print(json.dumps({"script": args.script, **report}))
    else:
        wrapped = " (unwrapped payload)" if report["unwrapped"] else ""
        print(f"{report['verdict']}: {args.script}{wrapped}")
        print(f"  reason: {report['reason']}")
        for f in report["findings"]:
            lines = ", ".join(map(str, f["lines"]))
            print(f"  [{f['rule']}] {f['function']} (lines {lines}): {f['explanation']}")
    return EXIT_CODES[report["verdict"]]
