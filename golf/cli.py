"""The `golf` command line (also `python -m golf`). See CONTRACT.md for every command.

Each command is a small function taking the parsed arguments and returning an exit status. A user error
(`GolfError`) prints one line, `golf: error: <what is wrong>`, and exits 2 (`golf check` uses 3 for
unreadable input, since 1 and 2 are verdicts there).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from golf.errors import GolfError


def _print_json(obj) -> None:
    print(json.dumps(obj, indent=2, default=str))


# --- data ----------------------------------------------------------------------------------------------


def cmd_data_fetch(args) -> int:
    if args.source == "default":
        from golf.data.sources import fetch_default

        path = fetch_default(Path(args.root) if args.root else None)
    else:
        from golf.data.fineweb import fetch_fineweb

        path = fetch_fineweb(Path(args.root) if args.root else None, variant=args.variant, train_shards=args.train_shards)
    print(json.dumps({"path": str(path)}) if args.json else path)
    return 0


def cmd_data_build(args) -> int:
    from golf.data.build import build_dataset

    path = build_dataset(args.input, vocab_size=args.vocab_size, out=args.out, val_docs=args.val_docs,
                         name=args.name, shard_tokens=args.shard_tokens)
    manifest = json.loads((path / "manifest.json").read_text())
    _print_json(manifest) if args.json else print(path)
    return 0


def cmd_data_inspect(args) -> int:
    from golf.data.dataset import inspect_path

    report = inspect_path(args.path)
    if args.json:
        _print_json(report)
    else:
        for key in ("path", "name", "vocab_size", "train", "val"):
            if key in report:
                print(f"{key}: {report[key]}")
        if "tokens" in report:
            print(f"tokens: {report['tokens']} docs: {report['docs']}")
    return 0


# --- model and run -------------------------------------------------------------------------------------


def cmd_model(args) -> int:
    from golf.presets import PRESETS

    if args.list:
        print("\n".join(PRESETS))
        return 0
    from golf.config import build_config
    from golf.model import GPT

    cfg = build_config(preset=args.preset, overrides=args.set)
    import torch

    with torch.device("meta"):  # count parameters without allocating them
        n = sum(p.numel() for p in GPT(cfg.model).parameters())
    out = {"preset": cfg.preset, "params": n, "config": cfg.model.to_dict()}
    _print_json(out) if args.json else print(f"{cfg.preset}: {n:,} parameters")
    return 0


def cmd_run(args) -> int:
    from golf.config import build_config
    from golf.run import run

    cfg = build_config(preset=args.preset, config_file=args.config, overrides=(args.set or []) +
                       ([f"data.path={args.data}"] if args.data else []))
    result = run(cfg, args.out)
    if not result:  # a non-main torchrun rank
        return 0
    if args.json:
        _print_json(result)
    else:
        e, a, t = result["eval"], result["artifact"], result["ttt"]
        print(f"val_bpb:{e['val_bpb']:.8f} val_bpb_prequant:{e['val_bpb_prequant']:.6f} "
              f"val_bpb_postquant:{e['val_bpb_postquant']:.6f} bytes_total:{a['bytes_total']} fits:{a['fits']} "
              f"ttt:{t['strategy']} legal:{t['legal']}")
        print(f"run folder: {args.out}")
    if args.strict and not result["artifact"]["fits"]:
        print(f"golf: error: artifact is {result['artifact']['bytes_total']} bytes, over the "
              f"{result['artifact']['limit']}-byte limit", file=sys.stderr)
        return 1
    return 0


# --- artifact, check, study ----------------------------------------------------------------------------


def cmd_artifact_inspect(args) -> int:
    from golf.artifact import LIMIT_BYTES, code_bytes, inspect_artifact

    report = inspect_artifact(args.path)
    bytes_model = report["totals"]["bytes_file"]
    bytes_code = code_bytes()
    report.update({"bytes_model": bytes_model, "bytes_code": bytes_code, "bytes_total": bytes_model + bytes_code,
                   "limit": LIMIT_BYTES, "fits": bytes_model + bytes_code <= LIMIT_BYTES})
    if args.json:
        _print_json(report)
    else:
        _print_artifact_table(report)
    if args.strict and not report["fits"]:
        print(f"golf: error: {args.path}: {report['bytes_total']} bytes, over the {LIMIT_BYTES}-byte limit", file=sys.stderr)
        return 1
    return 0


def _print_artifact_table(report: dict) -> None:
    """Where the bytes go: one line per tensor, largest first, then the totals as key: value lines."""
    rows = sorted(report["tensors"], key=lambda t: -t["bytes_compressed_alone"])
    width = max([len("tensor")] + [len(t["name"]) for t in rows])
    print(f"{'tensor':<{width}}  {'shape':>12}  {'kind':<6} {'bits':>4}  {'raw B':>10}  {'zipped B':>10}  "
          f"{'entropy B':>10}  share")
    for t in rows:
        shape = "x".join(str(n) for n in t["shape"])
        bits = "-" if t["bits"] is None else str(t["bits"])
        print(f"{t['name']:<{width}}  {shape:>12}  {t['kind']:<6} {bits:>4}  {t['bytes_raw']:>10,}  "
              f"{t['bytes_compressed_alone']:>10,}  {t['entropy_bound_bytes']:>10,.0f}  {t['share']:6.1%}")
    for key, value in report.items():
        if key != "tensors":
            print(f"{key}: {value}")


def cmd_check(args) -> int:
    from golf.check import main as check_main

    return check_main(list(args.scripts) + (["--json"] if args.json else []))


def cmd_study_run(args) -> int:
    from golf.study import run_study

    summary = run_study(args.name, shard=args.shard, root=Path(args.root) if args.root else None)
    if args.json:
        print(json.dumps(summary))
    else:
        print(f"done: {summary['done']} cached: {summary['cached']} failed: {summary['failed']}")
    return 1 if summary["failed"] else 0


def cmd_study_report(args) -> int:
    from golf.study import report_study

    for path in report_study(args.name, root=Path(args.root) if args.root else None):
        print(path)
    return 0


# --- parser --------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="golf", description="A lab for Parameter Golf research.")
    sub = p.add_subparsers(dest="command", required=True)

    data = sub.add_parser("data", help="fetch, build and inspect datasets").add_subparsers(dest="data_command", required=True)
    f = data.add_parser("fetch", help="the offline default corpus or the real FineWeb shards")
    f.add_argument("--source", choices=["default", "fineweb"], default="default")
    f.add_argument("--variant", choices=["sp1024", "sp8192"], default="sp1024")
    f.add_argument("--train-shards", type=int, default=1)
    f.add_argument("--root", help="data root (default $GOLF_DATA or ~/.cache/golf)")
    f.add_argument("--json", action="store_true")
    f.set_defaults(func=cmd_data_fetch)
    b = data.add_parser("build", help="text -> tokenizer, shards and manifest.json")
    b.add_argument("--input", nargs="+", required=True, help=".txt (one document per file), .jsonl (one per line) or directories")
    b.add_argument("--vocab-size", type=int, required=True)
    b.add_argument("--out", required=True)
    b.add_argument("--val-docs", type=int, default=100, help="the first K documents are validation")
    b.add_argument("--name", default="corpus")
    b.add_argument("--shard-tokens", type=int, default=100_000_000)
    b.add_argument("--json", action="store_true")
    b.set_defaults(func=cmd_data_build)
    i = data.add_parser("inspect", help="report on a dataset directory or a shard")
    i.add_argument("path")
    i.add_argument("--json", action="store_true")
    i.set_defaults(func=cmd_data_inspect)

    m = sub.add_parser("model", help="build a model config and count its parameters")
    m.add_argument("--preset")
    m.add_argument("--list", action="store_true")
    m.add_argument("-s", "--set", action="append", default=[], metavar="KEY=VALUE")
    m.add_argument("--json", action="store_true")
    m.set_defaults(func=cmd_model)

    r = sub.add_parser("run", help="train -> TTT -> quantize -> round trip -> score")
    r.add_argument("config", nargs="?", help="a YAML run config")
    r.add_argument("--preset")
    r.add_argument("--data", help="dataset directory (default: the offline default corpus)")
    r.add_argument("-s", "--set", action="append", default=[], metavar="KEY=VALUE")
    r.add_argument("--out", required=True, help="run folder")
    r.add_argument("--json", action="store_true")
    r.add_argument("--strict", action="store_true", help="exit 1 if the artifact is over 16,000,000 bytes")
    r.set_defaults(func=cmd_run)

    a = sub.add_parser("artifact", help="artifact tools").add_subparsers(dest="artifact_command", required=True)
    ai = a.add_parser("inspect", help="byte breakdown by tensor, entropy bound")
    ai.add_argument("path")
    ai.add_argument("--json", action="store_true")
    ai.add_argument("--strict", action="store_true")
    ai.set_defaults(func=cmd_artifact_inspect)

    c = sub.add_parser("check", help="static TTT-legality check of submission scripts (files or directories)")
    c.add_argument("scripts", nargs="+", metavar="SCRIPT", help="scripts or directories of them; never executed")
    c.add_argument("--json", action="store_true")
    c.set_defaults(func=cmd_check)

    s = sub.add_parser("study", help="papermill studies").add_subparsers(dest="study_command", required=True)
    sr = s.add_parser("run", help="run a study grid (cached, resumable)")
    sr.add_argument("name")
    sr.add_argument("--shard", default=None, help="i/N: run only this shard of the grid")
    sr.add_argument("--root", help="project root holding studies/, results/, papermill_runs/ (default: cwd)")
    sr.add_argument("--json", action="store_true")
    sr.set_defaults(func=cmd_study_run)
    sp = s.add_parser("report", help="aggregate a study's results into tables and figures")
    sp.add_argument("name")
    sp.add_argument("--root")
    sp.set_defaults(func=cmd_study_report)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except GolfError as e:
        print(f"golf: error: {e}", file=sys.stderr)
        return 3 if args.command == "check" else 2
    except BrokenPipeError:  # `golf ... | head`: the reader left; not an error of ours
        sys.stderr.close()
        return 0
    except KeyboardInterrupt:
        print("golf: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
