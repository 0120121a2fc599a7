"""Trainer speed on this machine: tokens/s and ms/step per preset, and the trainer's overhead against a
bare training loop over the same model, optimizers and batches (target on CPU: < 5%).

    python benchmarks/train_throughput.py [--presets tiny tiny1127 tiny1550 tiny1554] [--steps 30]
        [--data DIR] [--out results/benchmarks/train_throughput_cpu.json]

The bare loop is the minimum any trainer must do per step: fetch the batch, forward, backward, Muon + Adam
step, zero grads. The trainer adds LR/momentum scheduling, the progress switch, metrics lines and the
wallclock checks. Runs alternate (bare, trainer, bare, trainer, ...) and the median of each is compared, so
a noisy machine hurts both alike. GPU numbers belong to the GPU issue.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import torch

from golf.config import build_config
from golf.data.dataset import Dataset
from golf.io import write_json
from golf.model import GPT
from golf.optim import build_optimizers
from golf.train import TokenStream, train


def bare_loop(cfg, ds, steps: int) -> float:
    torch.manual_seed(cfg.seed)
    model = GPT(cfg.model)
    opts = build_optimizers(model, cfg.train)
    stream = TokenStream(ds)
    t0 = time.perf_counter()
    for _ in range(steps):
        batch = torch.from_numpy(stream.next_step(cfg.train.batch_tokens, cfg.train.seq_len, 1, 1))[0]
        loss = model(batch[:, :-1], batch[:, 1:])
        loss.backward()
        for o in opts:
            o.step()
        model.zero_grad(set_to_none=True)
    return time.perf_counter() - t0


def golf_trainer(cfg, ds, steps: int) -> float:
    torch.manual_seed(cfg.seed)
    model = GPT(cfg.model)
    with tempfile.TemporaryDirectory() as tmp:
        res = train(model, ds, cfg, metrics_path=Path(tmp) / "metrics.jsonl", device=torch.device("cpu"))
    return res.wall_s


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--presets", nargs="+", default=["tiny", "tiny1127", "tiny1550", "tiny1554"])
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--data", default=None, help="dataset directory (default: the offline default corpus)")
    p.add_argument("--out", default="results/benchmarks/train_throughput_cpu.json")
    args = p.parse_args()
    if args.data is None:
        from golf.data.sources import fetch_default

        args.data = str(fetch_default())
    ds = Dataset.open(args.data)
    rows = []
    for preset in args.presets:
        cfg = build_config(preset, overrides=[f"train.max_steps={args.steps}", "train.log_every=1",
                                              f"model.vocab_size={ds.vocab_size}", "train.checkpoint=false"])
        bare, ours = [], []
        for _ in range(args.repeats):
            bare.append(bare_loop(cfg, ds, args.steps))
            ours.append(golf_trainer(cfg, ds, args.steps))
        b, o = statistics.median(bare), statistics.median(ours)
        tokens = args.steps * cfg.train.batch_tokens
        rows.append({"preset": preset, "params": sum(p.numel() for p in GPT(cfg.model).parameters()),
                     "batch_tokens": cfg.train.batch_tokens, "seq_len": cfg.train.seq_len, "steps": args.steps,
                     "trainer_ms_per_step": o / args.steps * 1e3, "bare_ms_per_step": b / args.steps * 1e3,
                     "trainer_tokens_per_s": tokens / o, "overhead_pct": (o / b - 1) * 100,
                     "bare_runs_s": bare, "trainer_runs_s": ours})
        print(json.dumps(rows[-1]))
    result = {"benchmark": "train_throughput", "device": f"cpu ({platform.machine()}, {os.cpu_count()} cores)",
              "torch": torch.__version__, "threads": torch.get_num_threads(), "target_overhead_pct": 5.0,
              "presets": rows, "command": "python benchmarks/train_throughput.py"}
    write_json(args.out, result)


if __name__ == "__main__":
    main()
