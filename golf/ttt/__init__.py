"""Test-time training: the config and the registry of strategies (implementations in golf.ttt.strategies).

As `QuantConfig` sits beside `QUANTIZERS` in golf.quant, `TTTConfig` sits beside `STRATEGIES` here; this
module imports nothing heavier than golf.errors, so golf.config can import it.

  name              stage      ledger verdict   what it does                                     seed
  none              -          legal            nothing
  prequant_val      prequant   illegal (C3)     AdamW fine-tune on validation tokens, then       #1550
                                                quantize
  lora_single_pass  postquant  illegal (C3)     rank-8 LoRA trained over the validation stream;  #1127
                                                the adapters stay on the model for run.py's
                                                official pass
  train_slice       prequant   legal            the prequant_val fine-tune on the tail of the    #1554
                                                last training shard; never reads validation
  score_first       postquant  legal            chunks scored first, then SGD on them            #549, #1493
  lora_score_first  postquant  legal            per document: chunks scored, then one Adam step  #77
                                                on rank-8 LoRA; adapters reset per document

`stage` says where golf/run.py calls the strategy: "prequant" on the trained float model before
quantization (the update is then quantized with it), "postquant" on the model rebuilt from the artifact.
`declared_illegal` only makes `golf run` refuse to start the strategy unless `ttt.allow_illegal=true`
(contract); the verdict itself is computed from the token ledger, never from this table.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from golf.errors import GolfError


@dataclass(frozen=True)
class StrategySpec:
    stage: str | None  # "prequant" | "postquant" | None (does nothing)
    declared_illegal: bool  # trains on validation tokens before scoring them
    epochs: int  # seed default, used where ttt.epochs = -1
    lr: float  # seed default, used where ttt.lr = -1


STRATEGIES: dict[str, StrategySpec] = {
    "none": StrategySpec(None, False, 0, 0.0),
    "prequant_val": StrategySpec("prequant", True, 6, 5e-4),  # #1550: 6 epochs; AdamW lr 5e-4 as in #442, #1738
    "lora_single_pass": StrategySpec("postquant", True, 1, 0.01),  # #1127: rank 8, lr 0.01, 1 epoch
    "train_slice": StrategySpec("prequant", False, 3, 5e-4),  # #1554: 3 epochs AdamW lr 5e-4
    "score_first": StrategySpec("postquant", False, 3, 0.005),  # #1493: SGD lr 0.005 (#549: 0.002), 3 epochs/chunk
    "lora_score_first": StrategySpec("postquant", False, 1, 0.01),  # #77: one Adam step per chunk, lr 0.01
}

# LoRA adapter target sets by name (golf/ttt/lora.py builds them; the config stores the name).
LORA_TARGETS = ("qv_head", "all")


@dataclass
class TTTConfig:
    strategy: str = "none"  # none | prequant_val | lora_single_pass | train_slice | score_first | lora_score_first
    allow_illegal: bool = False  # strategies that train on val before scoring it refuse to run without this
    epochs: int = -1  # -1 = the strategy's seed default (STRATEGIES above)
    lr: float = -1.0  # -1 = the strategy's seed default
    freeze_blocks: int = 2  # prequant_val / train_slice: first k blocks frozen (#1550)
    chunk_tokens: int = 32_768  # score_first chunk size (#549/#1493)
    momentum: float = 0.9  # score_first SGD momentum
    grad_clip: float = 1.0  # gradient-norm clip of every full-weight TTT step (#549/#1493); 0 = none
    lora_rank: int = 8  # lora strategies (#1127)
    lora_targets: str = "qv_head"  # qv_head: c_q, c_v + head (#77, #1127); all: every block linear + head
    doc_chunk_tokens: int = 256  # lora_score_first chunk within a document
    slice_tokens: int = 131_073  # train_slice: tail of the last training shard (#1554); 0 = budget-matched: as
    # many sequences as prequant_val trains on (half A with the probe on), the illegal strategy's legal control
    batch_seqs: int = 8  # sequences per TTT step
    probe: bool = True  # memorization probe: adapt on half A of the val documents, hold out half B
    compile: bool = False  # torch.compile a fresh model instance for TTT (#1550: 860 s -> 426 s)
    probe_split: int = 0  # which documents form the halves: 0 = the first half of the documents is A (contiguous);
    # k >= 1 = drawn at random with seed k, stratified by source corpus, the stream reordered A then B (run.py)
    probe_swap: bool = False  # exchange the halves' roles: the documents of B are adapted on, A's held out
    # false: the probe scores before TTT and after the last epoch only (per_epoch [0, E]): 2 diagnostic
    # passes instead of E + 1, for the epoch-axis studies, which run each E separately. Only where a curve
    # exists (an epoch strategy with the probe on). Left out of the config while true, so every earlier run
    # keeps its config hash.
    probe_curve: bool = field(default=True, metadata={"omit_default": True})

    def __post_init__(self):
        if self.strategy not in STRATEGIES:
            raise GolfError(f"ttt.strategy {self.strategy!r} is unknown; valid: {', '.join(STRATEGIES)}")
        if self.epochs < -1:
            raise GolfError(f"ttt.epochs={self.epochs} must be >= 0, or -1 for the strategy's seed default")
        if not (self.lr > 0 or self.lr == -1):
            raise GolfError(f"ttt.lr={self.lr} must be > 0, or -1 for the strategy's seed default")
        for key in ("chunk_tokens", "doc_chunk_tokens", "lora_rank", "batch_seqs"):
            if getattr(self, key) < 1:
                raise GolfError(f"ttt.{key}={getattr(self, key)} must be >= 1")
        if self.slice_tokens < 2 and self.slice_tokens != 0:
            raise GolfError(f"ttt.slice_tokens={self.slice_tokens} must be >= 2 (inputs plus shifted targets), "
                            "or 0 to match prequant_val's budget")
        if not self.probe_curve and (not self.probe or self.strategy in ("none", "lora_score_first")):
            raise GolfError(f"ttt.probe_curve=false changes nothing for ttt.strategy={self.strategy} with "
                            f"ttt.probe={str(self.probe).lower()} (no per-epoch curve to skip); drop it")
        if self.probe_split < 0:
            raise GolfError(f"ttt.probe_split={self.probe_split} must be >= 0 (0 = contiguous halves, k = seed k)")
        if self.freeze_blocks < 0 or self.grad_clip < 0:
            raise GolfError("ttt.freeze_blocks and ttt.grad_clip must be >= 0 (0 = none)")
        if not 0.0 <= self.momentum < 1.0:
            raise GolfError(f"ttt.momentum={self.momentum} must be in [0, 1)")
        if self.lora_targets not in LORA_TARGETS:
            raise GolfError(f"ttt.lora_targets={self.lora_targets!r} is unknown; valid: {', '.join(LORA_TARGETS)}")
