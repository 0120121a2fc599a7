"""One study cell: `preset + seed + bundle + overrides` -> a run config, a run, and what a notebook shows.

A cell's whole definition is four values, the parameters every study notebook takes (besides `out`):

    preset     a model preset (`golf model --list`), with the run scale it brings
    seed       the run's seed
    bundle     a named override bundle (golf.presets.BUNDLES), applied last; "none" applies nothing
    overrides  dotted config keys, exactly as `golf run -s key=value` takes them

So a study YAML names config keys directly and there is nothing to translate: the same four values give
the same RunConfig here, in `golf study run` (which computes the config hash without executing the
notebook, so a study is cached and resumable) and in `golf run --preset P -s key=value ...`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from golf.errors import GolfError

CELL_PARAMS = ("preset", "seed", "bundle", "overrides")


def _nest(dotted: dict[str, Any]) -> dict:
    """{"train.max_steps": 5, "seed": 1} -> {"train": {"max_steps": 5}, "seed": 1}."""
    out: dict = {}
    for key, value in dotted.items():
        node = out
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise GolfError(f"override {key!r} goes below {part!r}, which is not a config section")
        node[leaf] = value
    return out


def _dotted(cfg, key: str) -> Any:
    node: Any = cfg
    for part in key.split("."):
        node = getattr(node, part)
    return node


def cell_config(preset: str = "tiny", seed: int = 1337, bundle: str = "none", overrides: dict | None = None):
    """The RunConfig of one cell. Unknown keys fail with the valid list (golf.config.build_config).

    `overrides` may not set `preset` or `seed` (they are the cell's own parameters). A bundle that changes
    nothing here (the switch is already off in this preset) is refused: it would silently measure nothing.
    """
    from golf.config import build_config
    from golf.presets import BUNDLES

    overrides = dict(overrides or {})
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise GolfError(f"seed must be an integer, got {seed!r}")
    clash = sorted({"preset", "seed"} & set(overrides))
    if clash:
        raise GolfError(f"overrides set {', '.join(clash)}: give it as the cell's own parameter")
    if bundle not in BUNDLES:
        raise GolfError(f"bundle {bundle!r} is unknown; valid: {', '.join(BUNDLES)}")
    plain = build_config(preset=preset, overrides=_nest({**overrides, "seed": seed}))
    if not BUNDLES[bundle]:
        return plain
    if all(_dotted(plain, key) == value for key, value in BUNDLES[bundle].items()):
        on = [name for name, keys in BUNDLES.items()
              if keys and any(_dotted(plain, k) != v for k, v in keys.items())]
        raise GolfError(f"bundle {bundle!r} changes nothing in preset {preset!r} with these overrides; "
                        f"bundles that do: {', '.join(on) or 'none'}")
    return build_config(preset=preset, overrides=_nest({**overrides, **BUNDLES[bundle], "seed": seed}))


def run_cell(out: str | Path, preset: str = "tiny", seed: int = 1337, bundle: str = "none",
             overrides: dict | None = None) -> dict:
    """Build the cell's config, run it into `out` and return the result dict (also out/result.json).

    The four cell parameters are stored as result.json's `study_params`; the report reads its study
    columns from them (`bundle` and each dotted key of `overrides`). Where the study runner left a reuse
    marker in `out` (golf.study.reuse: another study holds a run with this config hash), that run's files
    are installed instead of running again.
    """
    from golf.run import resolve_dataset, run, with_dataset_vocab
    from golf.study.reuse import REUSE_FILE, install

    cfg = cell_config(preset, seed, bundle, overrides)
    params = {"preset": preset, "seed": seed, "bundle": bundle, "overrides": dict(overrides or {})}
    if (Path(out) / REUSE_FILE).is_file():  # the study runner found this very run in another study
        return install(Path(out), with_dataset_vocab(cfg, resolve_dataset(cfg).vocab_size).hash(), params)
    return run(cfg, out, study_params=params)


# ---------------------------------------------------------------------------------------------------
# Inline views of one cell's result (what a notebook shows; the study's tables come from golf.report,
# and these use the report's own computations, so a notebook and the report never disagree)
# ---------------------------------------------------------------------------------------------------


def result_table(result: dict):
    """One-row DataFrame of the cell's headline numbers, with its study columns and n-gram baselines."""
    from golf.report.frame import _results_frame, is_study_column

    frame = _results_frame([result])
    keep = ["preset", "seed", "strategy", "legal", "val_bpb", "val_bpb_prequant", "val_bpb_postquant",
            "bytes_total", "fits", "quant", "compressor", "params", "bigram_kn", "trigram_kn", "train_wall_s"]
    return frame[keep + [c for c in frame.columns if c not in keep and is_study_column(c)]]


def epoch_table(result: dict):
    """`ttt.per_epoch` with gains against epoch 0 (negative = TTT lowered bpb), as the report computes them."""
    from golf.report.frame import per_epoch_frame

    frame = per_epoch_frame([result])
    cols = ["epoch", "val_bpb", "gain", "val_bpb_adapted", "gain_adapted", "val_bpb_heldout", "gain_heldout"]
    return frame[cols]


def probe_gap(result: dict):
    """One row: the final epoch's gain on all tokens, on adapted half A, on held-out half B, and A - B.

    A negative gain is an improvement. `gap_A_minus_B` < 0 means TTT helped the tokens it trained on more
    than the held-out ones: the signature of memorization (the report tests it across seeds).
    """
    from golf.report.frame import per_epoch_frame
    from golf.report.tables import _ttt_runs

    last = _ttt_runs(per_epoch_frame([result]))
    row = last[["strategy", "legal", "epochs", "seed", "gain", "gain_adapted", "gain_heldout"]].copy()
    row["gap_A_minus_B"] = row["gain_adapted"] - row["gain_heldout"]
    return row.reset_index(drop=True)


def plot_ttt_epochs(result: dict):
    """val_bpb by TTT epoch for one cell: all tokens, adapted half A, held-out half B (the memorization probe)."""
    import matplotlib.pyplot as plt

    frame = epoch_table(result)
    t = result["ttt"]
    ends_only = len(frame) == 2 and int(t["epochs"]) > 1  # ttt.probe_curve=false: epochs 0 and E only
    fig, ax = plt.subplots(figsize=(6, 3.5))
    labels = {"val_bpb": "all val tokens", "val_bpb_adapted": "half A (adapted)",
              "val_bpb_heldout": "half B (held out)"}
    for col, label in labels.items():
        if frame[col].notna().any():
            ax.plot(frame["epoch"], frame[col].astype(float), marker="o", label=label,
                    linestyle="none" if ends_only else "-")
    ax.set_xlabel("TTT epoch")
    ax.set_ylabel("val_bpb (bits per byte)")
    ax.set_title(f"{t['strategy']} ({'legal' if t['legal'] else 'illegal'}), seed {result['seed']}"
                 + (" (before and after TTT only)" if ends_only else ""))
    ax.grid(alpha=0.3)
    if ax.lines:
        ax.legend(fontsize="small")
    fig.tight_layout()
    return fig


def plot_train_loss(out: str | Path):
    """Training loss by step, read from the run folder's metrics.jsonl."""
    import matplotlib.pyplot as plt

    lines = [json.loads(line) for line in (Path(out) / "metrics.jsonl").read_text().splitlines() if line.strip()]
    points = [(m["step"], m["train_loss"]) for m in lines if "train_loss" in m]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot([s for s, _ in points], [v for _, v in points], marker=".")
    ax.set_xlabel("step")
    ax.set_ylabel("train loss (nats per token)")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def plot_learning_curve(result: dict):
    """Validation bpb against training tokens for one cell (train.val_every, result.json train.curve), with
    the Kneser-Ney bigram and trigram of the same training tokens (on the run's full scored targets); without
    a curve, the float base's val_bpb_base at the tokens it trained on."""
    import matplotlib.pyplot as plt

    curve = result["train"].get("curve") or []
    fig, ax = plt.subplots(figsize=(6, 3.5))
    if curve:
        ax.plot([p["tokens"] / 1e6 for p in curve], [p["val_bpb"] for p in curve], marker="o", label="model (live weights)")
    elif result["eval"].get("val_bpb_base") is not None and result["train"].get("tokens"):  # no curve: the base at the end of its budget
        ax.plot([result["train"]["tokens"] / 1e6], [result["eval"]["val_bpb_base"]], marker="o", linestyle="",
                label="float base (end of training)")
    for name, style in (("bigram_kn", "--"), ("trigram_kn", ":")):
        value = (result["eval"].get("baselines") or {}).get(name)
        if value is not None:
            ax.axhline(value, color="grey", linestyle=style, label=name)
    ax.set_xlabel("training tokens (millions)")
    ax.set_ylabel("validation bpb")
    ax.set_title(f"{result['model']['preset']}, seed {result['seed']}" + ("" if curve else ": no in-run curve (train.val_every=0)"))
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    fig.tight_layout()
    return fig


def bundle_table(preset: str = "tiny", seed: int = 1337, bundle: str = "none", overrides: dict | None = None):
    """The config keys the cell's bundle changes, with the value without it and with it."""
    import pandas as pd

    from golf.presets import BUNDLES

    plain = cell_config(preset, seed, "none", overrides)
    cut = cell_config(preset, seed, bundle, overrides)
    rows = [{"bundle": bundle, "key": key, "without": _dotted(plain, key), "with": _dotted(cut, key)}
            for key in BUNDLES.get(bundle, {})]
    return pd.DataFrame(rows, columns=["bundle", "key", "without", "with"])
