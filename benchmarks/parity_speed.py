"""golf's GPT against the reference's (../shared/reference/train_gpt.py): forward+backward tokens/s on CPU.

    python benchmarks/parity_speed.py [--reference ../shared/reference/train_gpt.py] [--layers 9]
        [--width 512] [--batch 4] [--seq-len 512] [--iters 3] [--rounds 5] [--threads N]
        [--out results/benchmarks/parity_speed_cpu.json]

Both models are built at the same config (default: the baseline's 9 x 512, GQA 8/4, MLP 2x, vocab 1024,
tied embedding) and hold the same weights (golf's, copied into the reference model by name). One round
times `--iters` forward+backward passes of each on the same batch, in float32 on CPU with the same thread
count; rounds alternate which model goes first, so drift on the machine hits both alike. Reported: the
fastest round of each (a busy machine only adds time) and the medians, in process CPU time and wall time,
and the ratio golf / reference of tokens per second (1.00 = the same speed; > 1 = golf faster). The
reference's train_gpt.py is imported without running its main(); CUDA speed is not measured here.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

from golf.io import write_json
from golf.model import GPT, ModelConfig
from golf.pgformat import load_script_definitions

ROOT = Path(__file__).resolve().parents[1]


def fwd_bwd(model, x, y, iters: int) -> tuple[float, float]:
    """(wall s, process CPU s) of `iters` forward+backward passes (gradients cleared each time)."""
    t0, c0 = time.perf_counter(), time.process_time()
    for _ in range(iters):
        model.zero_grad(set_to_none=True)
        model(x, y).backward()
    return time.perf_counter() - t0, time.process_time() - c0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--reference", default=str(ROOT.parent / "shared" / "reference" / "train_gpt.py"))
    p.add_argument("--layers", type=int, default=9)
    p.add_argument("--width", type=int, default=512)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--seq-len", type=int, default=512)
    p.add_argument("--iters", type=int, default=3)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    p.add_argument("--out", default=str(ROOT / "results" / "benchmarks" / "parity_speed_cpu.json"))
    args = p.parse_args()
    torch.set_num_threads(args.threads)

    ref = load_script_definitions(args.reference)
    torch.manual_seed(0)
    mine = GPT(ModelConfig(n_layer=args.layers, d_model=args.width, vocab_size=1024, max_seq_len=args.seq_len))
    with torch.no_grad():  # non-initial weights, so no branch is a multiply by zero
        for param in mine.parameters():
            param.add_(0.02 * torch.randn_like(param))
    theirs = ref.GPT(vocab_size=1024, num_layers=args.layers, model_dim=args.width, num_heads=8, num_kv_heads=4,
                     mlp_mult=2, tie_embeddings=True, tied_embed_init_std=0.005, logit_softcap=30.0,
                     rope_base=10000.0, qk_gain_init=1.5)
    theirs.load_state_dict(mine.state_dict(), strict=True)
    x = torch.randint(0, 1024, (args.batch, args.seq_len))
    y = torch.randint(0, 1024, (args.batch, args.seq_len))
    fwd_bwd(mine, x, y, 1)  # warm-up: allocator and kernels, outside the timing
    fwd_bwd(theirs, x, y, 1)

    times: dict[str, list[tuple[float, float]]] = {"golf": [], "reference": []}
    for r in range(args.rounds):
        order = [("golf", mine), ("reference", theirs)]
        for name, model in order if r % 2 == 0 else order[::-1]:
            times[name].append(fwd_bwd(model, x, y, args.iters))
    tokens = args.iters * args.batch * args.seq_len

    def summary(name: str) -> dict:
        wall = [t[0] for t in times[name]]
        cpu = [t[1] for t in times[name]]
        return {"wall_s": wall, "cpu_s": cpu, "tokens_per_s_wall_best": tokens / min(wall),
                "tokens_per_s_cpu_best": tokens / min(cpu), "tokens_per_s_wall_median": tokens / statistics.median(wall)}

    g, rf = summary("golf"), summary("reference")
    out = {
        "benchmark": "parity_speed",
        "command": "python benchmarks/parity_speed.py " + " ".join(sys.argv[1:]),
        "config": {"layers": args.layers, "width": args.width, "heads": 8, "kv_heads": 4, "mlp_mult": 2,
                   "vocab": 1024, "batch": args.batch, "seq_len": args.seq_len, "dtype": "float32",
                   "iters_per_round": args.iters, "rounds": args.rounds, "threads": args.threads},
        "tokens_per_round": tokens,
        "golf": g,
        "reference": rf,
        "ratio_golf_over_reference": {
            "cpu_best": g["tokens_per_s_cpu_best"] / rf["tokens_per_s_cpu_best"],
            "wall_best": g["tokens_per_s_wall_best"] / rf["tokens_per_s_wall_best"],
            "wall_median": g["tokens_per_s_wall_median"] / rf["tokens_per_s_wall_median"],
        },
        "env": {"torch": torch.__version__, "cpu": platform.processor() or platform.machine(),
                "cores": os.cpu_count()},
    }
    write_json(args.out, out)
    print(json.dumps(out["ratio_golf_over_reference"]))


if __name__ == "__main__":
    main()
