"""Scoring the validation stream: non-overlapping or sliding windows, every official target exactly once.

Both modes go through the token ledger (`ValidationStream.score`), and so through the one bits-per-byte
function. `windows` is the baseline's evaluation (each window of seq_len tokens scored whole; under the
`all` protocol a short last window so no token is dropped); `sliding` re-reads overlapping windows that
advance by `stride` and scores only the new targets of each, so every token after the first window sees
seq_len - stride tokens of context (records: stride 64, 1.2244 -> 1.1925 for the baseline, at about 4x the
evaluation time).

Which targets are official (`eval.protocol`): the baseline (`load_validation_tokens` in train_gpt.py) keeps
the first ((N-1) // seq_len) * seq_len + 1 tokens of the N-token stream and scores every target in them,
so up to seq_len - 1 targets at the end are never scored: that is `pg`. `all` scores every target. The
stream handed to the ledger is cut to the official range before anything reads it, so the ledger's
exactly-once verdict, TTT and the probe all work on that range and nothing beyond it.
"""

from __future__ import annotations

import numpy as np
import torch

from golf.data.fineweb import SHARD_PREFIX as FINEWEB_NAME
from golf.device import autocast
from golf.errors import GolfError
from golf.ledger import ValidationStream
from golf.metric import BpbMeter
from golf.progress import Progress
from golf.windows import Window, make_windows


def resolve_protocol(protocol: str, dataset_name: str) -> str:
    """'auto' -> 'pg' on FineWeb data (the challenge's own stream), 'all' on any other corpus."""
    if protocol != "auto":
        return protocol
    return "pg" if dataset_name == FINEWEB_NAME else "all"


def validation_subset(tokens: np.ndarray, data_cfg, bos_id: int) -> np.ndarray:
    """The validation stream a run scores: all of it, or its first `data.max_val_docs` documents and/or
    `data.max_val_tokens` tokens (a document starts at its BOS; with both set, whichever ends first)."""
    if data_cfg.max_val_docs:
        starts = np.flatnonzero(tokens == bos_id)
        if data_cfg.max_val_docs < starts.size:
            tokens = tokens[: starts[data_cfg.max_val_docs]]
    if data_cfg.max_val_tokens:
        tokens = tokens[: data_cfg.max_val_tokens]
    return tokens


def official_tokens(tokens: np.ndarray, protocol: str, seq_len: int) -> np.ndarray:
    """The validation tokens whose targets are official: all of them, or (pg) the baseline's prefix."""
    if protocol == "all":
        return tokens
    usable = (tokens.size - 1) // seq_len * seq_len  # whole windows of seq_len targets
    if usable <= 0:
        raise GolfError(f"eval.protocol=pg: {tokens.size} validation tokens hold no whole window of "
                        f"seq_len {seq_len}; use eval.protocol=all or a shorter eval.seq_len")
    return tokens[: usable + 1]


def _batches(windows: list[Window], size: int, desc: str | None = None):
    """Batches of `size` windows; with `desc`, a progress bar counting windows as they are handed out."""
    with Progress(desc or "", total=len(windows), unit="window", enabled=desc is not None) as bar:
        for i in range(0, len(windows), size):
            yield windows[i : i + size]
            bar.update(len(windows[i : i + size]))


def evaluate(model, stream: ValidationStream, eval_cfg, seq_len: int, device: torch.device,
             lo: int = 1, hi: int | None = None) -> dict:
    """Official scoring of targets lo..hi-1 (default: all). Returns val_loss and val_bpb of the whole meter."""
    hi = stream.n if hi is None else hi
    was_training = model.training
    model.eval()
    for batch in _batches(make_windows(eval_cfg, seq_len, lo, hi), eval_cfg.batch_seqs, "eval"):
        stream.score(model, batch, device, autocast(device))
    model.train(was_training)
    return {"val_loss": stream.meter.val_loss, "val_bpb": stream.meter.val_bpb,
            "tokens": stream.meter.tokens, "bytes": stream.meter.bytes}


def diagnose(model, stream: ValidationStream, eval_cfg, seq_len: int, device: torch.device,
             lo: int, hi: int, desc: str | None = None) -> dict:
    """Diagnostic scoring of targets lo..hi-1 (memorization probe); not part of the official score.
    `desc` names a progress bar (the probe's many small passes go without one)."""
    meter = BpbMeter(stream.table)
    was_training = model.training
    model.eval()
    for batch in _batches(make_windows(eval_cfg, seq_len, lo, hi), eval_cfg.batch_seqs, desc):
        stream.diagnose(model, batch, device, autocast(device), meter)
    model.train(was_training)
    return {"val_loss": meter.val_loss, "val_bpb": meter.val_bpb, "tokens": meter.tokens, "bytes": meter.bytes}
