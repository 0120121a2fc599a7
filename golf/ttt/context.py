"""What a TTT strategy may see: the context golf/run.py hands it, sealed by construction.

A strategy gets exactly two ways to data:

* `ctx.stream`, a `golf.ledger.SealedStream`: the validation stream's three doors (score, diagnose,
  train_windows), each recorded by the ledger, and its shape (length, byte table, document starts);
* `ctx.train`, the training tokens the strategy declared it reads (`Strategy.train_tail_tokens`), already
  read here: a copy of the tail of the last training shard and that shard's file name; None when the
  strategy declared none.

Nothing else in the context leads to a file or an array of validation tokens: there is no `Dataset`, no
`RunConfig` (its `data.path` names the dataset directory), no path (the metrics log is a writer that keeps
its path to itself), and the training tail is a plain array, not a memory map (a memmap carries its file
name, whose directory holds the validation shards). So `ttt.legal`, computed from the ledger, covers
everything a strategy did with validation tokens; tests/test_ttt.py tries the ways a strategy could reach
them otherwise and checks that each raises.

What this cannot close: a forward pass sees its inputs, so a model (or a hook on it) handed to `diagnose`
could keep the tokens of windows not yet scored; and Python has no private attributes, so a strategy that
digs through name-mangled slots or closures reaches anything. tests/test_ttt.py therefore also forbids
golf/ttt any private name of what the context holds, introspection and forward hooks. The probe is the
one diagnostic reader of unscored windows, and it only sums losses.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from golf.io import MetricsLog
from golf.ledger import SealedStream, ValidationStream
from golf.windows import probe_split


@dataclass(frozen=True)
class TrainingData:
    """The training tokens a strategy may read: the last `tail.size` tokens of the last training shard."""

    shard_name: str  # the shard's file name (no directory)
    tail: np.ndarray  # int64, a copy: no file behind it


@dataclass(frozen=True)
class TTTContext:
    eval: object  # EvalConfig: how the official pass windows the stream (mode, stride, batch_seqs)
    seed: int  # the run's seed (LoRA adapters are drawn from it)
    stream: SealedStream
    train: TrainingData | None
    device: torch.device
    seq_len: int
    split: int  # first target position of held-out half B; targets 1..split-1 are half A
    log: MetricsLog


def make_context(strategy, cfg, stream: ValidationStream, dataset, device: torch.device, seq_len: int,
                 metrics_path: Path | None = None, split: int | None = None) -> TTTContext:
    """The sealed context for `strategy` (golf.ttt.strategies.Strategy) in a run of `cfg` on `dataset`.

    `split` is the first target of held-out half B (run() passes the probe's; default: the stream's
    document halves, golf.windows.probe_split)."""
    split = probe_split(stream.doc_starts, stream.n) if split is None else int(split)
    train = None
    wanted = strategy.train_tail_tokens((split if cfg.ttt.probe else stream.n) - 1, seq_len)
    if wanted:
        index = len(dataset.train_shards) - 1
        tokens = dataset.train_tokens(index)
        n = min(wanted, int(tokens.size))
        train = TrainingData(dataset.train_shards[index].name, np.array(tokens[tokens.size - n :], dtype=np.int64))
    return TTTContext(eval=cfg.eval, seed=cfg.seed, stream=SealedStream(stream), train=train, device=device,
                      seq_len=seq_len, split=split,
                      log=MetricsLog(metrics_path, "ttt", strategy=strategy.name))
