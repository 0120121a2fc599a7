"""Quantization and compression benchmark at the parameter-golf baseline's shapes.

What it measures, on CPU:
- time to quantize the whole parameter set with int8 (baseline), int6, gptq_lite (6 bits) and full
  GPTQ (6 bits; Hessian collection not included: its cost is forward passes, counted by the run);
- for the int8 and int6 states: for each compressor, with and without byte shuffle, the artifact's
  bytes on disk, the uncompressed container bytes, the ratio, the order-0 entropy bound of the stored
  symbols, and the time to compress;
- the code bytes of the golf modules that exist now (minified and not).

Weights: by default the baseline's 17,059,912 parameters are built by name and shape (9 layers, d=512,
8 heads / 4 KV heads, MLP 1024, vocab 1024, tied embedding) and drawn from a heavy-tailed Student-t(5)
with a log-normal spread of row scales; control tensors (gains, mixes, skip weights) get values near
their inits. These are NOT trained weights: trained matrices compress differently, so pass
`--checkpoint state_dict.pt` (a plain `torch.save(model.state_dict())`, loaded with weights_only=True)
for numbers that mean something about a real run. GPTQ's Hessians are synthetic too (correlated
activations: a low-rank signal plus noise), because no model is run here; their values change GPTQ's
result but hardly its run time.

Usage: python benchmarks/quant_bench.py [--checkpoint PATH] [--out results.json] [--compressors zlib,zstd]
Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch

from golf.artifact import code_bytes, entropy_bound_bytes, payload_bytes, save_artifact
from golf.compress import COMPRESSORS
from golf.io import write_json
from golf.quant import QuantConfig, quantize_state_dict

# the baseline (train_gpt.py): 9 layers, width 512, 8 heads / 4 KV heads (head dim 64), MLP 2x, vocab 1024
N_LAYER, D_MODEL, N_HEAD, N_KV_HEAD, MLP_HIDDEN, VOCAB = 9, 512, 8, 4, 1024, 1024
BASELINE_PARAMS = 17_059_912


def baseline_shapes() -> dict[str, tuple[int, ...]]:
    """State_dict names and shapes of the baseline (golf.model's naming)."""
    kv = D_MODEL // N_HEAD * N_KV_HEAD  # 256
    shapes: dict[str, tuple[int, ...]] = {"tok_emb.weight": (VOCAB, D_MODEL)}
    for i in range(N_LAYER):
        p = f"blocks.{i}."
        shapes[p + "attn.c_q.weight"] = (D_MODEL, D_MODEL)
        shapes[p + "attn.c_k.weight"] = (kv, D_MODEL)
        shapes[p + "attn.c_v.weight"] = (kv, D_MODEL)
        shapes[p + "attn.proj.weight"] = (D_MODEL, D_MODEL)
        shapes[p + "attn.q_gain"] = (N_HEAD,)
        shapes[p + "mlp.fc.weight"] = (MLP_HIDDEN, D_MODEL)
        shapes[p + "mlp.proj.weight"] = (D_MODEL, MLP_HIDDEN)
        shapes[p + "attn_scale"] = (D_MODEL,)
        shapes[p + "mlp_scale"] = (D_MODEL,)
        shapes[p + "resid_mix"] = (2, D_MODEL)
    shapes["skip_weights"] = (N_LAYER // 2, D_MODEL)  # 4 encoder -> decoder skips
    return shapes


def synthetic_state(seed: int) -> dict[str, torch.Tensor]:
    """Heavy-tailed weights at the baseline's shapes (see the module docstring)."""
    g = torch.Generator().manual_seed(seed)
    sd: dict[str, torch.Tensor] = {}
    for name, shape in baseline_shapes().items():
        if len(shape) == 2 and not any(k in name for k in ("mix", "skip")):
            rows, cols = shape
            z = torch.randn(rows, cols, generator=g)
            chi2 = torch.randn(rows, cols, 5, generator=g).pow(2).sum(-1)  # chi-square, 5 dof
            t5 = z / torch.sqrt(chi2 / 5)  # Student-t(5): the tails of trained matrices
            row_scale = torch.exp(0.25 * torch.randn(rows, 1, generator=g))
            sd[name] = (t5 * row_scale / math.sqrt(cols)).float()
        else:  # control tensors near their inits (gains 1, mixes (1, 0), q_gain 1.5)
            base = 1.5 if "q_gain" in name else 1.0
            t = base + 0.05 * torch.randn(*shape, generator=g)
            if "resid_mix" in name:
                t[1] -= 1.0
            sd[name] = t
    return sd


def synthetic_hessians(sd: dict[str, torch.Tensor], rows: int, seed: int) -> dict[str, torch.Tensor]:
    """X^T X / n of correlated activations (rank-n/8 signal + noise), one per input width, shared."""
    g = torch.Generator().manual_seed(seed)
    by_width: dict[int, torch.Tensor] = {}
    out = {}
    for name, t in sd.items():
        if t.dim() != 2 or "emb" in name or "mix" in name or "skip" in name:
            continue
        cols = t.shape[1]
        if cols not in by_width:
            rank = max(cols // 8, 1)
            X = torch.randn(rows, rank, generator=g) @ torch.randn(rank, cols, generator=g)
            X += 0.3 * torch.randn(rows, cols, generator=g)  # (rows, cols)
            by_width[cols] = (X.double().T @ X.double()) / rows
        out[name] = by_width[cols]
    return out


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--checkpoint", help="torch.save'd state_dict of a trained model (weights_only load)")
    ap.add_argument("--out", help="also write the JSON here")
    ap.add_argument("--compressors", default=",".join(COMPRESSORS), help="comma list (default: all)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    ap.add_argument("--calib-rows", type=int, default=4096, help="synthetic activation rows per Hessian")
    ap.add_argument(
        "--keep-fp16-max-numel",
        type=int,
        default=QuantConfig.keep_fp16_max_numel,
        help="float tensors this small stay unquantized (baseline 65,536; golf's tiny run scale 1,024)",
    )
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    compressors = [c for c in args.compressors.split(",") if c]
    for c in compressors:
        if c not in COMPRESSORS:
            ap.error(f"--compressors: {c!r} is unknown; choose from {sorted(COMPRESSORS)}")

    if args.checkpoint:
        loaded = torch.load(args.checkpoint, map_location="cpu", weights_only=True)
        sd = {k: v for k, v in loaded.items() if isinstance(v, torch.Tensor)}
        source = f"checkpoint {args.checkpoint}"
    else:
        sd = synthetic_state(args.seed)
        source = "synthetic Student-t(5) weights at the baseline's shapes"
    params = sum(t.numel() for t in sd.values())
    hessians = synthetic_hessians(sd, args.calib_rows, args.seed + 1)

    result: dict = {
        "source": source,
        "params": params,
        "params_match_baseline": params == BASELINE_PARAMS,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "keep_fp16_max_numel": args.keep_fp16_max_numel,
        "cpu": platform.processor() or platform.machine(),
        "quantize": {},
        "compress": [],
    }
    states = {}
    for method, kw in (("int8", {}), ("int6", {}), ("gptq_lite", {"bits": 6}), ("gptq", {"bits": 6})):
        cfg = QuantConfig(method=method, keep_fp16_max_numel=args.keep_fp16_max_numel, **kw)
        t0 = time.perf_counter()
        qs = quantize_state_dict(sd, cfg, hessians if method == "gptq" else None)
        wall_s = time.perf_counter() - t0
        states[method] = qs
        result["quantize"][cfg.label()] = {
            "wall_s": round(wall_s, 3),
            "bytes_raw": qs.nbytes(),
            "entropy_bound_bytes": round(entropy_bound_bytes(qs)),
            "notes": len(qs.notes),
        }
        print(f"quantize:{cfg.label()} wall_s:{wall_s:.2f}", file=sys.stderr)

    with tempfile.TemporaryDirectory() as tmp:
        for method in ("int8", "int6"):
            qs = states[method]
            bound = entropy_bound_bytes(qs)
            for comp in compressors:
                for shuffle in (False, True):
                    cfg = QuantConfig(
                        method=method,
                        compressor=comp,
                        shuffle=shuffle,
                        keep_fp16_max_numel=args.keep_fp16_max_numel,
                    )
                    path = Path(tmp) / f"{method}_{comp}_{int(shuffle)}.golf"
                    t0 = time.perf_counter()
                    size = save_artifact(path, qs, cfg)
                    wall_s = time.perf_counter() - t0
                    raw = payload_bytes(qs, shuffle)
                    row = {
                        "quant": method,
                        "compressor": comp,
                        "shuffle": shuffle,
                        "bytes_model": size,
                        "bytes_payload": raw,
                        "ratio": round(raw / size, 4),
                        "entropy_bound_bytes": round(bound),
                        "bytes_over_bound": round(size / bound, 4),
                        "compress_wall_s": round(wall_s, 2),
                    }
                    result["compress"].append(row)
                    print(
                        f"compress:{method} {comp} shuffle={shuffle} bytes:{size} s:{wall_s:.1f}",
                        file=sys.stderr,
                    )

    result["code_bytes"] = {"minified": code_bytes(minify=True), "plain": code_bytes(minify=False)}
    print(json.dumps(result, indent=2))
    if args.out:
        write_json(args.out, result)
    return result


if __name__ == "__main__":
    main()
