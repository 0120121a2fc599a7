"""`golf check` over a labelled folder of real submissions: confusion matrix, every miss, time per script.

The folder holds scripts and a `labels.json` in the format of `shared/pg_submissions/labels.json`: a list
of {"file", "label"} (label `illegal`, `legal_ttt` or `no_ttt`; other keys are kept as evidence). Each
script is checked in this process, one after the other, timed with a wall clock; the checker never runs
the scripts. A crash of the checker (an exception that `check_script` let through) is counted and listed,
never raised.

The targets it reports against (issue #18): no crash; no illegal script called legal; no legal or no-TTT
script called illegal; at least 90% of the illegal ones flagged illegal; at most 10% unknown overall; at
most 15 s for any script and a median under 2 s on a 2-core CPU. Both wall-clock and CPU seconds
(`time.process_time`, this process only) are reported: on a shared machine the wall clock also counts
other people's work.

Usage: python benchmarks/check_corpus.py DIR [--out results/benchmarks/check_corpus.json] [--md PATH]
Prints the matrix, the wrong and unknown verdicts with their reasons, and the per-script times; with
--out also writes every verdict as JSON (and --md a short summary table) atomically.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

from golf.check import check_script
from golf.errors import GolfError
from golf.io import write_json, write_text

LABELS = ("illegal", "legal_ttt", "no_ttt")
VERDICTS = ("illegal", "legal", "unknown", "unreadable", "crash")


def run(folder: Path) -> dict:
    labels_path = folder / "labels.json"
    try:
        entries = json.loads(labels_path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise GolfError(f"{labels_path}: cannot read the labels ({exc})") from None
    rows = []
    for entry in entries:
        label = entry.get("label")
        if label not in LABELS or "file" not in entry:
            raise GolfError(f"{labels_path}: entry {entry!r} needs a file and a label in {LABELS}")
        t0, c0 = time.perf_counter(), time.process_time()
        try:
            report = check_script(folder / entry["file"])
            verdict, reason = report["verdict"], report["reason"]
        except GolfError as exc:
            verdict, reason = "unreadable", str(exc)
        except Exception as exc:  # noqa: BLE001 - a crash is what this benchmark counts
            verdict, reason = "crash", f"{type(exc).__name__}: {exc}"
        rows.append(
            {
                "file": entry["file"],
                "label": label,
                "verdict": verdict,
                "seconds": round(time.perf_counter() - t0, 3),
                "cpu_seconds": round(time.process_time() - c0, 3),
                "reason": reason,
            }
        )
    return summarise(rows)


def summarise(rows: list[dict]) -> dict:
    matrix = {label: {v: 0 for v in VERDICTS} for label in LABELS}
    for r in rows:
        matrix[r["label"]][r["verdict"]] += 1
    illegal = [r for r in rows if r["label"] == "illegal"]
    seconds = [r["seconds"] for r in rows]
    cpu = [r["cpu_seconds"] for r in rows]
    wrong = [r for r in rows if _wrong(r)]
    return {
        "scripts": len(rows),
        "matrix": matrix,
        "crashes": sum(r["verdict"] == "crash" for r in rows),
        "illegal_called_legal": sum(r["label"] == "illegal" and r["verdict"] == "legal" for r in rows),
        "legal_called_illegal": sum(r["label"] != "illegal" and r["verdict"] == "illegal" for r in rows),
        "illegal_flagged_share": (sum(r["verdict"] == "illegal" for r in illegal) / len(illegal))
        if illegal
        else None,
        "unknown_share": sum(r["verdict"] == "unknown" for r in rows) / len(rows) if rows else None,
        "seconds_max": max(seconds, default=None),
        "seconds_median": statistics.median(seconds) if seconds else None,
        "cpu_seconds_max": max(cpu, default=None),
        "cpu_seconds_median": statistics.median(cpu) if cpu else None,
        "wrong": [r["file"] for r in wrong],
        "rows": rows,
    }


def _wrong(row: dict) -> bool:
    if row["verdict"] in ("crash", "unreadable"):
        return True
    return (row["label"] == "illegal") != (row["verdict"] == "illegal") and row["verdict"] != "unknown"


def render(summary: dict) -> str:
    """The matrix as a markdown table, then the misses and the unknowns with their reasons."""
    lines = [
        "| label \\ verdict | " + " | ".join(VERDICTS) + " |",
        "| --- |" + " --- |" * len(VERDICTS),
    ]
    for label, counts in summary["matrix"].items():
        lines.append(f"| {label} | " + " | ".join(str(counts[v]) for v in VERDICTS) + " |")
    share = summary["illegal_flagged_share"]
    lines += [
        "",
        f"scripts: {summary['scripts']}; crashes: {summary['crashes']}; illegal called legal: "
        f"{summary['illegal_called_legal']}; legal or no-TTT called illegal: {summary['legal_called_illegal']}; "
        f"illegal flagged: {share:.0%}; unknown: {summary['unknown_share']:.0%}; "
        f"wall seconds per script: median {summary['seconds_median']:.2f}, max {summary['seconds_max']:.2f}; "
        f"CPU seconds: median {summary['cpu_seconds_median']:.2f}, max {summary['cpu_seconds_max']:.2f}",
        "",
    ]
    for r in summary["rows"]:
        if _wrong(r) or r["verdict"] == "unknown":
            tag = "WRONG" if _wrong(r) else "unknown"
            lines.append(
                f"- {tag}: `{r['file']}` (label {r['label']}, verdict {r['verdict']}): {r['reason']}"
            )
    lines += ["", "| wall s | CPU s | label | verdict | script |", "| ---: | ---: | --- | --- | --- |"]
    for r in summary["rows"]:
        lines.append(
            f"| {r['seconds']:.2f} | {r['cpu_seconds']:.2f} | {r['label']} | {r['verdict']} | `{r['file']}` |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path, help="scripts plus labels.json")
    parser.add_argument("--out", type=Path, help="write every verdict as JSON here")
    parser.add_argument("--md", type=Path, help="write the summary as markdown here")
    args = parser.parse_args(argv)
    try:
        summary = run(args.folder)
    except GolfError as exc:
        print(f"golf: error: {exc}", file=sys.stderr)
        return 2
    text = render(summary)
    print(text, end="")
    command = "python benchmarks/check_corpus.py " + " ".join(argv if argv is not None else sys.argv[1:])
    if args.out:
        meta = {
            "command": command,
            "python": platform.python_version(),
            "machine": platform.machine(),
            "folder": str(args.folder),
        }
        write_json(args.out, {**meta, **summary})
    if args.md:
        head = f"# golf check on `{args.folder}`\n\n`{command}` (Python {platform.python_version()}, {platform.machine()})\n\n"
        write_text(args.md, head + text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
