"""TTT strategies: a registry of named strategies, each running where the seeds put it.

A strategy receives the model and a `TTTContext`. Validation tokens are reachable only through
`ctx.stream` (golf.ledger.ValidationStream): `score` for the official pass, `diagnose` for probe
measurements, `train_windows` for gradient batches. The verdict on legality is computed afterwards from the
ledger, never from the strategy's name; `declared_illegal` only makes `golf run` refuse to start such a
strategy unless `ttt.allow_illegal=true` (contract).

Memorization probe: the validation documents are split into half A (the first half of the documents,
adapted on) and half B (held out: no TTT gradient ever touches it). `probe_split` gives the first target
position of B.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from golf.data.dataset import Dataset
from golf.errors import GolfError
from golf.ledger import ValidationStream


@dataclass
class TTTContext:
    cfg: object  # RunConfig
    stream: ValidationStream
    dataset: Dataset
    device: torch.device
    seq_len: int
    split: int  # first target position of held-out half B; targets 1..split-1 are half A
    metrics_path: Path | None = None


@dataclass
class TTTOutcome:
    epochs: int
    per_epoch: list[dict] = field(default_factory=list)
    scored: bool = False  # True when the strategy itself made the official scoring pass
    info: dict = field(default_factory=dict)  # extra keys for result.json's "ttt"


def probe_split(stream: ValidationStream) -> int:
    """First target position of half B: the BOS of the first document of the second half of the documents."""
    starts = stream.doc_starts
    if len(starts) < 2:
        return stream.n  # one document: no held-out half
    return int(starts[len(starts) // 2])


class NoTTT:
    name = "none"
    stage = None
    declared_illegal = False

    def __init__(self, ttt_cfg):
        self.cfg = ttt_cfg

    def run(self, model, ctx: TTTContext) -> TTTOutcome:
        return TTTOutcome(epochs=0)


STRATEGY_CLASSES: dict[str, type] = {"none": NoTTT}


def get_strategy(ttt_cfg) -> object:
    """Instantiate the configured strategy; refuse declared-illegal ones without ttt.allow_illegal."""
    if ttt_cfg.strategy not in STRATEGY_CLASSES:
        raise GolfError(f"ttt.strategy {ttt_cfg.strategy!r} is unknown; valid: {', '.join(STRATEGY_CLASSES)}")
    cls = STRATEGY_CLASSES[ttt_cfg.strategy]
    if cls.declared_illegal and not ttt_cfg.allow_illegal:
        raise GolfError(f"ttt.strategy={ttt_cfg.strategy} trains on validation tokens before scoring them "
                        "(illegal in Parameter Golf); set ttt.allow_illegal=true to run it for study")
    return cls(ttt_cfg)
