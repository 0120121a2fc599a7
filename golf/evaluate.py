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


def probe_halves(tokens: np.ndarray, bos_id: int, sources: list[str] | None, split: int,
                 swap: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """The memorization probe's halves: (stream, docs of A, docs of B, split), the documents as indices into
    `tokens` and `split` the first target position of B in the returned stream (targets 1..split-1 are A).

    split 0: A is the first half of the documents (len // 2), B the rest, the stream unchanged, as the
    probe always was. split k >= 1: the documents are drawn into A and B with numpy's generator seeded k,
    stratified by source (each source's documents shuffled and dealt alternately, the odd one to whichever
    half is shorter so far), so both halves carry the same registers; without sources, one stratum. The
    stream is then A's documents followed by B's, each half in the original order: every strategy sees A
    as the targets before the split, exactly as with split 0. `swap` exchanges the halves. Each document
    keeps its own BOS, so its bytes are the same in any order; a window that crosses into the next
    document sees a different neighbour, which is why a probe run's official score is read only within
    the run (its base is scored on the same stream) and the real protocol is a run with the probe off.
    """
    starts = np.flatnonzero(tokens == bos_id)
    if starts.size == 0 or starts[0] != 0:
        starts = np.concatenate([[0], starts]).astype(np.int64)
    n_docs = int(starts.size)
    if split == 0:
        a = np.arange(n_docs // 2)
        b = np.arange(n_docs // 2, n_docs)
    else:
        labels = list(sources[:n_docs]) if sources is not None else [""] * n_docs
        if len(labels) != n_docs:
            raise GolfError(f"probe split: {len(labels)} document sources for {n_docs} validation documents")
        rng = np.random.default_rng(split)
        halves: list[list[int]] = [[], []]
        for source in sorted(set(labels)):
            docs = rng.permutation([i for i, label in enumerate(labels) if label == source])
            first = 0 if len(halves[0]) <= len(halves[1]) else 1  # the odd document goes to the shorter half
            for j, doc in enumerate(docs):
                halves[(first + j) % 2].append(int(doc))
        a, b = np.sort(np.array(halves[0], dtype=np.int64)), np.sort(np.array(halves[1], dtype=np.int64))
    if swap:
        a, b = b, a
    ends = np.concatenate([starts[1:], [tokens.size]])
    first_b = int(sum(ends[i] - starts[i] for i in a))  # the BOS opening B's first document
    if n_docs < 2:
        return tokens, a, b, int(tokens.size)  # one document: no half B
    if split == 0 and not swap:
        return tokens, a, b, first_b
    stream = np.concatenate([tokens[starts[i]:ends[i]] for i in np.concatenate([a, b])])
    return stream.astype(tokens.dtype, copy=False), a, b, first_b


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
