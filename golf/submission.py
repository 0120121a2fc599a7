"""The entry point of an exported submission: what `golf export` writes as train_gpt.py, after the golf code it uses.

This module is never imported by golf at run time. `golf.export` flattens it, together with the golf
functions it imports (model, optimizer, trainer, quantizer, compressor, artifact, metric, window plans,
LoRA), into one file that runs without golf; `CONFIG` is replaced by the run's resolved config.

It does what `golf run` does, in the shape parameter-golf scripts have, so that a reader (and `golf check`,
which is built on real submissions) sees the usual structure: validation tokens loaded from the val
shards, an `eval_val` that scores windows under `torch.no_grad()`, and TTT loops whose order is visible
(score-first loops score a chunk before training on it; the illegal pre-quantization fine-tune visibly
trains on validation tokens). The numbers are golf's: the same trainer, quantizer and artifact, the same
windows and batch layout as golf's token ledger and the one bits-per-byte meter, so a run and its export
print the same val_bpb on one machine. Each validation target is scored exactly once, in one
left-to-right pass (the windows come from golf.evaluate.make_windows; score-first chunks cut them).

Not here (golf run does them): the base-model cache, the diagnostic passes (pre-/post-quantization
scores, the memorization probe; an exported TTT trains on everything it may, as a submission does) and
the token ledger's verdict. Validation is scored on the main rank only, after training.
"""

from __future__ import annotations

import glob
import os
import sys
import time
import uuid
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch

from golf.artifact import load_artifact, save_artifact
from golf.data.dataset import _find_tokenizer, _vocab_from_dirname
from golf.data.shards import BOS_ID, read_shard
from golf.device import autocast, init_distributed, pick_device
from golf.evaluate import official_tokens, resolve_protocol, validation_subset
from golf.metric import BpbMeter, build_byte_table, load_tokenizer
from golf.model import GPT, ModelConfig
from golf.quant import QuantConfig, collect_hessians, dequantize_state, quantize_state_dict
from golf.run import calibration_batches, seed_everything
from golf.train import train
from golf.ttt import STRATEGIES
from golf.ttt.lora import attach_lora
from golf.ttt.strategies import LORA_BETAS, _batched, _cosine, _mode, _step, _trainable
from golf.windows import (
    chunk_bounds,
    document_windows,
    documents,
    make_windows,
    plain_windows,
    split_at_chunks,
)

CONFIG: dict = {}  # golf export writes the run's resolved config (golf.config.RunConfig.to_dict()) here
# ... and its ttt.strategy here: golf export keeps only that strategy's branches of `main` (and so only
# the functions they call), so the script holds the code it runs and nothing a reader must rule out.
TTT_STRATEGY: str = "none"

# The reference script's environment variables (and a few TTT ones records use) -> config keys.
ENV_KEYS = {
    "SEED": ("", "seed", int),
    "ITERATIONS": ("train", "max_steps", int),
    "MAX_WALLCLOCK_SECONDS": ("train", "wallclock_s", float),
    "WARMDOWN_ITERS": ("train", "warmdown_steps", int),
    "WARMUP_STEPS": ("train", "compile_warmup_steps", int),
    "TRAIN_BATCH_TOKENS": ("train", "batch_tokens", int),
    "TRAIN_SEQ_LEN": ("train", "seq_len", int),
    "TRAIN_LOG_EVERY": ("train", "log_every", int),
    "MATRIX_LR": ("train", "matrix_lr", float),
    "SCALAR_LR": ("train", "scalar_lr", float),
    "TIED_EMBED_LR": ("train", "embed_lr", float),
    "MUON_MOMENTUM": ("train", "muon_momentum", float),
    "MUON_BACKEND_STEPS": ("train", "muon_ns_steps", int),
    "MUON_MOMENTUM_WARMUP_START": ("train", "muon_momentum_start", float),
    "MUON_MOMENTUM_WARMUP_STEPS": ("train", "muon_momentum_warmup_steps", int),
    "BETA1": ("train", "adam_beta1", float),
    "BETA2": ("train", "adam_beta2", float),
    "ADAM_EPS": ("train", "adam_eps", float),
    "GRAD_CLIP_NORM": ("train", "grad_clip", float),
    "TTT_EPOCHS": ("ttt", "epochs", int),
    "TTT_LR": ("ttt", "lr", float),
    "TTT_CHUNK_TOKENS": ("ttt", "chunk_tokens", int),
}


class Hyperparameters:
    """The exported config, with the reference's environment variables on top."""

    def __init__(self):
        cfg = {k: dict(v) if isinstance(v, dict) else v for k, v in CONFIG.items()}
        for env, (section, key, kind) in ENV_KEYS.items():
            if env in os.environ:
                (cfg[section] if section else cfg)[key] = kind(os.environ[env])
        self.data_path = os.environ.get("DATA_PATH", "./data/datasets/fineweb10B_sp1024")
        self.tokenizer_path = os.environ.get("TOKENIZER_PATH", "")
        self.run_id = os.environ.get("RUN_ID", str(uuid.uuid4()))
        self.val_loss_every = int(os.environ.get("VAL_LOSS_EVERY", 0))
        self.seed = cfg["seed"]
        self.model = cfg["model"]
        self.quant = QuantConfig(**cfg["quant"])
        self.train = SimpleNamespace(**cfg["train"])
        self.eval = SimpleNamespace(**cfg["eval"])
        self.ttt = SimpleNamespace(**cfg["ttt"])
        self.data = SimpleNamespace(**cfg["data"])
        if "VAL_BATCH_SIZE" in os.environ:  # tokens per evaluation batch, as in the reference
            self.eval.batch_seqs = max(1, int(os.environ["VAL_BATCH_SIZE"]) // (self.eval.seq_len or self.train.seq_len))
        seed = STRATEGIES[self.ttt.strategy]  # the seed defaults where ttt.epochs / ttt.lr are -1
        self.ttt_epochs = seed.epochs if self.ttt.epochs == -1 else int(self.ttt.epochs)
        self.ttt_lr = seed.lr if self.ttt.lr == -1 else float(self.ttt.lr)


# -----------------------------------------------------------------------------------------------------
# Data: parameter-golf's fineweb_{train,val}_NNNNNN.bin, or golf's <name>_{train,val}_NNNNNN.bin
# -----------------------------------------------------------------------------------------------------


def shard_files(directory: str, split: str) -> list[str]:
    files = sorted(glob.glob(os.path.join(directory, f"fineweb_{split}_*.bin")))
    return files or sorted(glob.glob(os.path.join(directory, f"*_{split}_[0-9][0-9][0-9][0-9][0-9][0-9].bin")))


class TrainShards:
    """The training shards of the data directory, as golf's trainer and GPTQ calibration read them."""

    def __init__(self, directory: str):
        self.directory = directory
        self.train_shards = shard_files(directory, "train")
        if not self.train_shards:
            raise SystemExit(f"train_gpt.py: no training shards (fineweb_train_*.bin or *_train_*.bin) in {directory}")

    def train_tokens(self, index: int) -> np.ndarray:
        return read_shard(self.train_shards[index])


def load_validation_tokens(directory: str, args, seq_len: int) -> tuple[torch.Tensor, str]:
    """The official validation targets as golf's run scores them (the config's documents/tokens, then the
    eval protocol: FineWeb's `pg` range by default) as int64, and the protocol used."""
    files = sorted(glob.glob(os.path.join(directory, "fineweb_val_*.bin")))
    name = "fineweb"
    if not files:
        files = sorted(glob.glob(os.path.join(directory, "*_val_[0-9][0-9][0-9][0-9][0-9][0-9].bin")))
        name = os.path.basename(files[0]).rsplit("_val_", 1)[0] if files else ""
    if not files:
        raise SystemExit(f"train_gpt.py: no validation shards (fineweb_val_*.bin or *_val_*.bin) in {directory}")
    tokens = validation_subset(np.concatenate([np.asarray(read_shard(f)) for f in files]), args.data, BOS_ID)
    protocol = resolve_protocol(args.eval.protocol, name)
    return torch.from_numpy(official_tokens(tokens, protocol, seq_len).astype(np.int64)), protocol


def window_batch(tokens: torch.Tensor, windows) -> tuple[torch.Tensor, torch.Tensor]:
    """(x, y) of a batch of windows: inputs tokens[s:e], targets tokens[s+1:e+1], padded with -100, and
    targets before a window's score_from masked (context only). The layout of golf's token ledger."""
    T = max(w.end - w.start for w in windows)
    x = torch.zeros(len(windows), T, dtype=torch.long)
    y = torch.full((len(windows), T), -100, dtype=torch.long)
    for i, w in enumerate(windows):
        x[i, : w.end - w.start] = tokens[w.start : w.end]
        y[i, : w.end - w.start] = tokens[w.start + 1 : w.end + 1]
        y[i, : w.score_from - w.start - 1] = -100
    return x, y


# -----------------------------------------------------------------------------------------------------
# Scoring and test-time training
# -----------------------------------------------------------------------------------------------------


def eval_val(model, val_tokens: torch.Tensor, windows, batch_seqs: int, device, meter: BpbMeter) -> None:
    """Score the targets of `windows` (in order) under no_grad into `meter`: nats and bytes per target."""
    with _mode(model, False), torch.no_grad():
        for batch in _batched(windows, batch_seqs):
            x, y = window_batch(val_tokens, batch)
            with autocast(device):
                nll = model(x.to(device), y.clamp_min(0).to(device), reduction="none").float().cpu()
            positions = torch.cat([torch.arange(w.score_from, w.end + 1) for w in batch])
            meter.add(nll[y != -100].numpy().astype(np.float64), val_tokens[positions - 1].numpy(),
                      val_tokens[positions].numpy())


def fine_tune(model, batches, args, device) -> None:
    """AdamW over all weights but the first ttt.freeze_blocks blocks, cosine LR over all steps (#1550)."""
    frozen = min(args.ttt.freeze_blocks, max(len(model.blocks) - 1, 0))
    frozen_ids = {id(p) for block in model.blocks[:frozen] for p in block.parameters()}
    params = [p for p in model.parameters() if id(p) not in frozen_ids]
    total, step = args.ttt_epochs * len(batches), 0
    with _trainable(model, params), _mode(model, True):
        opt = torch.optim.AdamW(params, lr=args.ttt_lr, weight_decay=0.0)
        for epoch in range(args.ttt_epochs):
            for x, y in batches:
                for group in opt.param_groups:
                    group["lr"] = args.ttt_lr * _cosine(step, total)
                _step(model, opt, params, x, y, device, args.ttt.grad_clip)
                step += 1


def ttt_prequant_val(model, val_tokens: torch.Tensor, args, device) -> None:
    """ILLEGAL (#1550): epochs of AdamW on the validation tokens before they are quantized and scored."""
    windows = plain_windows(1, val_tokens.numel(), args.eval_seq_len)
    batches = [window_batch(val_tokens, b) for b in _batched(windows, args.ttt.batch_seqs)]
    fine_tune(model, batches, args, device)


def ttt_train_slice(model, data: TrainShards, args, device, log0) -> None:
    """Legal (#1554): the same fine-tune on the tail of the LAST training shard; no validation token."""
    T = args.eval_seq_len
    tokens = data.train_tokens(len(data.train_shards) - 1)
    n = min(args.ttt.slice_tokens, int(tokens.size))
    tail = torch.from_numpy(np.asarray(tokens[tokens.size - n :], dtype=np.int64))
    seqs = (n - 1) // T
    x, y = tail[: seqs * T].view(seqs, T), tail[1 : seqs * T + 1].view(seqs, T)
    bs = args.ttt.batch_seqs
    log0(f"ttt:legal_slice source={os.path.basename(data.train_shards[-1])} tokens={n} (train data slice, not val_tokens)")
    fine_tune(model, [(x[i : i + bs], y[i : i + bs]) for i in range(0, seqs, bs)], args, device)


def eval_val_lora_single_pass(model, val_tokens: torch.Tensor, args, device, meter: BpbMeter) -> None:
    """ILLEGAL (#1127): rank-8 LoRA trained over the whole validation stream, then the stream is scored."""
    n, T = val_tokens.numel(), args.eval_seq_len
    adapters = attach_lora(model, args.ttt.lora_rank, args.ttt.lora_targets, seed=args.seed)
    params = adapters.parameters()
    with _trainable(model, params), _mode(model, True):
        opt = torch.optim.Adam(params, lr=args.ttt_lr, betas=LORA_BETAS)
        for epoch in range(args.ttt_epochs):
            for batch in _batched(plain_windows(1, n, T), args.ttt.batch_seqs):
                x, y = window_batch(val_tokens, batch)
                _step(model, opt, params, x, y, device, 0.0)
    eval_val(model, val_tokens, make_windows(args.eval, T, 1, n), args.eval.batch_seqs, device, meter)


def eval_val_score_first(model, val_tokens: torch.Tensor, args, device, meter: BpbMeter) -> None:
    """Legal score-first TTT (#549, #1493): chunk k is scored under no_grad, THEN trained on (SGD, momentum,
    grad clip, lr cosine over chunks); the last chunk is never trained on."""
    n, T, ttt = val_tokens.numel(), args.eval_seq_len, args.ttt
    bounds = chunk_bounds(n, ttt.chunk_tokens)
    scoring = split_at_chunks(make_windows(args.eval, T, 1, n), ttt.chunk_tokens, len(bounds))
    last = len(bounds) - 1
    params = list(model.parameters())
    with _trainable(model, params):
        opt = torch.optim.SGD(params, lr=args.ttt_lr, momentum=ttt.momentum)
        for k, (lo, hi) in enumerate(bounds):
            eval_val(model, val_tokens, scoring[k], args.eval.batch_seqs, device, meter)  # 1) score chunk k
            if k == last or args.ttt_epochs == 0:
                continue
            for group in opt.param_groups:
                group["lr"] = args.ttt_lr * _cosine(k, last)
            with _mode(model, True):  # 2) then adapt on the chunk just scored
                for epoch in range(args.ttt_epochs):
                    for batch in _batched(plain_windows(lo, hi, T), ttt.batch_seqs):
                        x, y = window_batch(val_tokens, batch)
                        _step(model, opt, params, x, y, device, ttt.grad_clip)


def eval_val_lora_score_first(model, val_tokens: torch.Tensor, args, device, meter: BpbMeter) -> None:
    """Legal per-document LoRA TTT (#77): per document, chunk by chunk, score the chunk under no_grad, then
    Adam steps on rank-8 adapters with it; adapters and moments reset at every document."""
    n, ttt = val_tokens.numel(), args.ttt
    starts = np.flatnonzero(val_tokens.numpy() == BOS_ID)
    adapters = attach_lora(model, ttt.lora_rank, ttt.lora_targets, seed=args.seed)
    params = adapters.parameters()
    with _trainable(model, params):
        for doc_start, lo, hi in documents(starts, n):
            adapters.reset()
            opt = torch.optim.Adam(params, lr=args.ttt_lr, betas=LORA_BETAS)
            chunks = [(c, min(c + ttt.doc_chunk_tokens, hi)) for c in range(lo, hi, ttt.doc_chunk_tokens)]
            for j, (c_lo, c_hi) in enumerate(chunks):
                windows = document_windows(doc_start, c_lo, c_hi, args.eval_seq_len)
                eval_val(model, val_tokens, windows, args.eval.batch_seqs, device, meter)  # 1) score
                if j == len(chunks) - 1:
                    continue
                with _mode(model, True):  # 2) then adapt on the chunk just scored
                    for epoch in range(args.ttt_epochs):
                        x, y = window_batch(val_tokens, windows)
                        _step(model, opt, params, x, y, device, 0.0)
    adapters.remove()


# -----------------------------------------------------------------------------------------------------
# The run
# -----------------------------------------------------------------------------------------------------


def main() -> None:
    args = Hyperparameters()
    device = pick_device(args.train.device)
    d = init_distributed(device)
    os.makedirs("logs", exist_ok=True)
    logfile = f"logs/{args.run_id}.txt"

    def log0(msg: str) -> None:
        if d.main:
            print(msg, flush=True)
            with open(logfile, "a") as f:
                print(msg, file=f)

    code_bytes = os.path.getsize(__file__)
    log0(f"golf_export run_id:{args.run_id} python:{sys.version.split()[0]} torch:{torch.__version__}")
    data_dir = Path(args.data_path)  # golf: its .model inside; parameter-golf: ../../tokenizers/fineweb_<vocab>_bpe.model
    tokenizer = args.tokenizer_path or str(_find_tokenizer(data_dir, _vocab_from_dirname(data_dir)))
    table = build_byte_table(load_tokenizer(tokenizer))
    model_cfg = ModelConfig(**{**args.model, "vocab_size": table.vocab_size})
    data = TrainShards(args.data_path)
    args.eval_seq_len = args.eval.seq_len or args.train.seq_len
    val_tokens, protocol = load_validation_tokens(args.data_path, args, args.eval_seq_len)
    log0(f"val_bpb:enabled tokenizer_kind=sentencepiece tokenizer_path={tokenizer}")
    log0(f"train_loader:dataset:{os.path.basename(os.path.normpath(args.data_path))} train_shards:{len(data.train_shards)}")
    partial = args.data.max_val_tokens or args.data.max_val_docs
    log0(f"val_loader:tokens:{val_tokens.numel() - 1} protocol:{protocol}" + (" (a subset only: not a full validation)" if partial else ""))
    if args.val_loss_every:
        log0("val_loss_every: ignored; golf's trainer scores validation once, after training")

    seed_everything(args.seed)
    model = GPT(model_cfg)
    log0(f"model_params:{sum(p.numel() for p in model.parameters())} world_size:{d.world} grad_accum_steps:{args.train.grad_accum}")
    log0(f"seed:{args.seed} iterations:{args.train.max_steps} max_wallclock_seconds:{args.train.wallclock_s:.0f}")
    metrics = f"logs/{args.run_id}.metrics.jsonl"
    cfg = SimpleNamespace(train=args.train, model=model_cfg, quant=args.quant)
    res = train(model, data, cfg, metrics_path=metrics if d.main else None, device=device, dist_info=d)
    loss = float("nan") if res.final_train_loss is None else res.final_train_loss
    log0(f"step:{res.steps}/{args.train.max_steps} train_loss:{loss:.4f} "
         f"train_time:{res.wall_s * 1000:.0f}ms step_avg:{res.wall_s * 1000 / max(res.steps, 1):.2f}ms")
    if d.world > 1:
        torch.distributed.barrier()
    if not d.main:  # scoring, TTT and the artifact are the main rank's
        torch.distributed.destroy_process_group()
        return

    if TTT_STRATEGY == "prequant_val":
        ttt_prequant_val(model, val_tokens, args, device)
    elif TTT_STRATEGY == "train_slice":
        ttt_train_slice(model, data, args, device, log0)

    # quantize -> artifact file -> read back -> dequantize -> strict load into a fresh model
    hessians = None
    if args.quant.uses_gptq():
        model.eval()
        with torch.no_grad(), autocast(device):
            hessians = collect_hessians(model, calibration_batches(data, SimpleNamespace(train=args.train, quant=args.quant), device))
    state = {k: v.detach().float().cpu() for k, v in model.state_dict().items()}
    artifact = "final_model.golfart"
    save_artifact(artifact, quantize_state_dict(state, args.quant, hessians), args.quant)
    restored = GPT(model_cfg)
    restored.load_state_dict(dequantize_state(load_artifact(artifact)), strict=True)
    restored.to(device)
    tag = "".join(c for c in args.quant.label() if c.isalnum()) + "_" + args.quant.compressor
    model_bytes = os.path.getsize(artifact)
    log0(f"Serialized model {tag}: {model_bytes} bytes")
    log0(f"Code size: {code_bytes} bytes")
    log0(f"Total submission size {tag}: {model_bytes + code_bytes} bytes")

    meter = BpbMeter(table)
    t_eval = time.perf_counter()
    if TTT_STRATEGY == "score_first":
        eval_val_score_first(restored, val_tokens, args, device, meter)
    elif TTT_STRATEGY == "lora_score_first":
        eval_val_lora_score_first(restored, val_tokens, args, device, meter)
    elif TTT_STRATEGY == "lora_single_pass":
        eval_val_lora_single_pass(restored, val_tokens, args, device, meter)
    else:
        n = val_tokens.numel()
        eval_val(restored, val_tokens, make_windows(args.eval, args.eval_seq_len, 1, n), args.eval.batch_seqs, device, meter)
    eval_ms = 1000.0 * (time.perf_counter() - t_eval)
    if TTT_STRATEGY != "none":
        log0(f"ttt:{TTT_STRATEGY} epochs:{args.ttt_epochs} lr:{args.ttt_lr}")
    log0(f"final_{tag}_roundtrip val_loss:{meter.val_loss:.4f} val_bpb:{meter.val_bpb:.4f} eval_time:{eval_ms:.0f}ms")
    log0(f"final_{tag}_roundtrip_exact val_loss:{meter.val_loss:.8f} val_bpb:{meter.val_bpb:.8f}")
    if d.world > 1:
        torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main()
