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
    from golf.run import run, source_config

    overrides = (args.set or []) + ([f"data.path={args.data}"] if args.data else [])
    if args.source:
        if args.config or args.preset:
            raise GolfError("golf run --from takes its config from RUN_DIR/config.json; drop CONFIG.yaml and "
                            "--preset (use -s key=value for what should change)")
        cfg = source_config(args.source, overrides)
    else:
        cfg = build_config(preset=args.preset, config_file=args.config, overrides=overrides)
    result = run(cfg, args.out, source=args.source)
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


# --- import --------------------------------------------------------------------------------------------


def cmd_import(args) -> int:
    from golf.pgformat import import_reference

    info = import_reference(args.path, args.out, data=args.data, overrides=args.set)
    if args.json:
        _print_json({"out": str(args.out), **info})
    else:
        print(f"imported {info['format']} {info['params']:,} parameters ({info['tensors']} tensors) "
              f"sha256 {info['sha256'][:12]} -> {args.out}")
        print(f"next: golf run --from {args.out} --out RUN_DIR [-s ttt.strategy=...]")
    return 0


# --- artifact, check, study ----------------------------------------------------------------------------


def cmd_artifact_inspect(args) -> int:
    from golf.artifact import LIMIT_BYTES, code_bytes, inspect_artifact

    report = inspect_artifact(args.path)
    bytes_model = report["totals"]["bytes_file"]
    config = Path(args.path).parent / "config.json"  # code bytes are those of the run's exported script
    bytes_code = code_bytes(json.loads(config.read_text())) if config.is_file() else None
    total = None if bytes_code is None else bytes_model + bytes_code
    report.update({"bytes_model": bytes_model, "bytes_code": bytes_code, "bytes_total": total,
                   "limit": LIMIT_BYTES, "fits": None if total is None else total <= LIMIT_BYTES})
    if args.strict and total is None:
        raise GolfError(f"{args.path}: no config.json beside it (a run folder's): code bytes unknown, cannot check the limit")
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


def cmd_export(args) -> int:
    from golf.config import build_config
    from golf.export import SCRIPT_NAME, export
    from golf.ttt.strategies import STRATEGY_CLASSES

    if args.runs and (args.preset or args.set):
        raise GolfError("golf export: give run folders or --preset/-s, not both")
    if not args.runs and not args.preset:
        raise GolfError("golf export: give a run folder (RUN_DIR) or --preset")
    config = None if args.runs else build_config(preset=args.preset, overrides=args.set).to_dict()
    sub = export(args.runs, args.out, config=config, wrap=not args.no_wrap, name=args.name)
    if STRATEGY_CLASSES[sub["ttt"]].declared_illegal:
        print(f"golf: warning: ttt.strategy={sub['ttt']} trains on validation tokens before scoring them; "
              "the leaderboard does not accept this record", file=sys.stderr)
    if args.json:
        _print_json(sub)
    else:
        print(f"{Path(args.out) / SCRIPT_NAME}: {sub['bytes_code']:,} bytes; submission.json, README.md")
    return 0


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
    r.add_argument("--from", dest="source", metavar="RUN_DIR",
                   help="skip training: take the model from a golf import (or run) folder")
    r.add_argument("--out", required=True, help="run folder")
    r.add_argument("--json", action="store_true")
    r.add_argument("--strict", action="store_true", help="exit 1 if the artifact is over 16,000,000 bytes")
    r.set_defaults(func=cmd_run)

    im = sub.add_parser("import", help="a reference final_model.pt / final_model.int8.ptz -> a golf run folder")
    im.add_argument("path", help="final_model.pt (state dict) or final_model.int8.ptz (zlib int8 export)")
    im.add_argument("--out", required=True, help="run folder to write (then: golf run --from it)")
    im.add_argument("--data", help="dataset directory the model reads (recorded as data.path, vocab checked)")
    im.add_argument("-s", "--set", action="append", default=[], metavar="KEY=VALUE",
                    help="what the weights cannot tell, e.g. model.logit_softcap=30")
    im.add_argument("--json", action="store_true")
    im.set_defaults(func=cmd_import)

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

    e = sub.add_parser("export", help="a runnable parameter-golf record folder (train_gpt.py without golf)")
    e.add_argument("runs", nargs="*", metavar="RUN_DIR", help="run folder(s); several seeds of one config")
    e.add_argument("--out", required=True, help="record folder to write")
    e.add_argument("--preset", help="export a preset (with -s overrides) instead of a run")
    e.add_argument("-s", "--set", action="append", default=[], metavar="KEY=VALUE")
    e.add_argument("--no-wrap", action="store_true", help="plain, readable source instead of lzma + base85")
    e.add_argument("--name", help="record name for submission.json")
    e.add_argument("--json", action="store_true")
    e.set_defaults(func=cmd_export)

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
