"""What the token ledger costs: score-first TTT through the ledger vs the same loop calling the model directly.

golf reaches validation tokens only through `ValidationStream` (golf/ledger.py), which records per target
when it was scored and when it first fed a gradient. This benchmark measures that bookkeeping on the
`score_first` strategy (the legal chunked TTT of #549/#1493), at the tiny preset on CPU:

  ledger  golf.ttt.strategies.ScoreFirst.run: chunks scored with `stream.score`, trained with
          `stream.train_windows` (probe off, so no diagnostic passes);
  direct  the same loop written against a plain token tensor: the same chunks, the same windows (cut at
          chunk ends), the same batches, SGD settings and cosine schedule, the per-token nll summed in a
          golf.metric.BpbMeter -- everything but the ledger.

Both start from the same weights; the script checks that they report the same val_bpb (same arithmetic),
then reports the fastest CPU time (process_time, one thread) of each over --repeats alternating runs and the
overhead in percent (target < 3%); the medians' overhead and the wall-clock numbers, which carry the noise
of a shared machine, come with it. The model is a freshly initialised tiny GPT (its timings do not depend on training); the
data is the test fixture text built into a 512-token dataset, or --data DIR.

Usage: python benchmarks/ttt_ledger_overhead.py [--data DIR] [--repeats 3] [--epochs 3] [--out results.json]
Prints one JSON object.
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from golf.config import build_config
from golf.data.dataset import Dataset
from golf.io import write_json
from golf.ledger import ValidationStream
from golf.metric import BpbMeter
from golf.model import GPT
from golf.ttt.context import make_context
from golf.ttt.strategies import ScoreFirst, _batched, _cosine, _step
from golf.windows import chunk_bounds, make_windows, plain_windows, split_at_chunks

FIXTURE_TEXT = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "text"


def gather(tokens: torch.Tensor, windows) -> tuple[torch.Tensor, torch.Tensor]:
    """(x, y) of a batch of windows, -100 where a target is context only or padding (as the ledger does)."""
    T = max(w.end - w.start for w in windows)
    x = torch.zeros(len(windows), T, dtype=torch.long)
    y = torch.full((len(windows), T), -100, dtype=torch.long)
    for i, w in enumerate(windows):
        L = w.end - w.start
        x[i, :L] = tokens[w.start : w.end]
        y[i, :L] = tokens[w.start + 1 : w.end + 1]
        y[i, : w.score_from - w.start - 1] = -100
    return x, y


def direct_score_first(model, tokens: np.ndarray, table, cfg, seq_len: int, epochs: int, lr: float) -> float:
    """ScoreFirst's loop (probe off) without the ledger; returns the val_bpb it scored."""
    ttt, device = cfg.ttt, torch.device("cpu")
    t = torch.from_numpy(tokens)
    n = t.numel()
    meter = BpbMeter(table)
    bounds = chunk_bounds(n, ttt.chunk_tokens)
    scoring = split_at_chunks(make_windows(cfg.eval, seq_len, 1, n), ttt.chunk_tokens, len(bounds))
    last = len(bounds) - 1
    params = list(model.parameters())
    opt = torch.optim.SGD(params, lr=lr, momentum=ttt.momentum)
    for k, (lo, hi) in enumerate(bounds):
        model.eval()
        with torch.no_grad():
            for batch in _batched(scoring[k], cfg.eval.batch_seqs):
                x, y = gather(t, batch)
                nll = model(x, y.clamp_min(0), reduction="none").float()
                mask = y != -100
                positions = np.concatenate([np.arange(w.score_from, w.end + 1) for w in batch])
                meter.add(nll[mask].numpy().astype(np.float64), tokens[positions - 1], tokens[positions])
        model.train()
        if k == last or epochs == 0:
            continue
        for group in opt.param_groups:
            group["lr"] = lr * _cosine(k, last)
        batches = _batched(plain_windows(lo, hi, seq_len), ttt.batch_seqs)
        for _ in range(epochs):
            for batch in batches:
                _step(model, opt, params, *gather(t, batch), device, ttt.grad_clip)
    return meter.val_bpb


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", help="dataset directory (default: the test fixture text, built in a temp dir)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--out", help="also write the JSON here")
    args = ap.parse_args()
    torch.set_num_threads(1)  # one thread: steadier timings on a shared machine

    with tempfile.TemporaryDirectory() as tmp:
        if args.data:
            data = Path(args.data)
        else:
            from golf.data.build import build_dataset

            data = build_dataset([FIXTURE_TEXT], vocab_size=512, out=Path(tmp) / "tiny", val_docs=4, name="tiny",
                                 shard_tokens=40_000)
        ds = Dataset.open(data)
        tokens = np.asarray(ds.val_tokens).astype(np.int64)
        cfg = build_config(preset="tiny", overrides=[f"model.vocab_size={ds.vocab_size}", "ttt.strategy=score_first",
                                                     "ttt.probe=false", f"ttt.epochs={args.epochs}"])
        seq_len = cfg.train.seq_len
        torch.manual_seed(0)
        base = GPT(cfg.model)
        strategy = ScoreFirst(cfg.ttt)

        times = {"ledger": [], "direct": []}  # wall seconds
        cpu = {"ledger": [], "direct": []}  # this process's CPU seconds: less disturbed by other processes
        bpb = {}
        def run_ledger():
            model = copy.deepcopy(base)
            stream = ValidationStream(tokens, ds.byte_table)
            ctx = make_context(strategy, cfg, stream, ds, torch.device("cpu"), seq_len)  # probe off: no split
            t0, c0 = time.perf_counter(), time.process_time()
            strategy.run(model, ctx)
            times["ledger"].append(time.perf_counter() - t0)
            cpu["ledger"].append(time.process_time() - c0)
            bpb["ledger"] = stream.meter.val_bpb
            assert stream.verdict() == (True, []), stream.verdict()

        def run_direct():
            model = copy.deepcopy(base)
            t0, c0 = time.perf_counter(), time.process_time()
            bpb["direct"] = direct_score_first(model, tokens, ds.byte_table, cfg, seq_len, strategy.epochs, strategy.lr)
            times["direct"].append(time.perf_counter() - t0)
            cpu["direct"].append(time.process_time() - c0)

        for i in range(args.repeats):  # alternate which goes first, so neither always gets a warmer cache
            for fn in (run_ledger, run_direct) if i % 2 == 0 else (run_direct, run_ledger):
                fn()

    # The minimum is the run least disturbed by other processes (timeit's rule). On a shared machine wall
    # time carries their noise, so the headline overhead is from CPU time; the wall numbers are reported too.
    ledger_s, direct_s = min(times["ledger"]), min(times["direct"])
    ledger_cpu, direct_cpu = min(cpu["ledger"]), min(cpu["direct"])
    ledger_med, direct_med = statistics.median(cpu["ledger"]), statistics.median(cpu["direct"])
    result = {
        "benchmark": "ttt_ledger_overhead",
        "strategy": "score_first",
        "val_tokens": int(tokens.size),
        "chunk_tokens": cfg.ttt.chunk_tokens,
        "epochs": strategy.epochs,
        "repeats": args.repeats,
        "ledger_cpu_s": ledger_cpu,  # fastest run
        "direct_cpu_s": direct_cpu,
        "overhead_pct": 100.0 * (ledger_cpu - direct_cpu) / direct_cpu,
        "overhead_pct_median": 100.0 * (ledger_med - direct_med) / direct_med,
        "ledger_wall_s": ledger_s,
        "direct_wall_s": direct_s,
        "overhead_pct_wall": 100.0 * (ledger_s - direct_s) / direct_s,
        "ledger_runs_cpu_s": cpu["ledger"],
        "direct_runs_cpu_s": cpu["direct"],
        "val_bpb_ledger": bpb["ledger"],
        "val_bpb_direct": bpb["direct"],
        "same_val_bpb": abs(bpb["ledger"] - bpb["direct"]) <= 1e-9 * abs(bpb["direct"]),
        "env": {"torch": torch.__version__, "cpu": platform.processor() or platform.machine(), "threads": 1},
    }
    print(json.dumps(result, indent=2))
    if args.out:
        write_json(args.out, result)


if __name__ == "__main__":
    main()
