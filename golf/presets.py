"""Named model configurations: the baseline, three seed stacks, and tiny twins for CPU tests.

A preset is a plain dict of `ModelConfig` overrides (the defaults are the baseline), so a preset says
only what differs and is safe to print, diff and serialise. There is one way to use one:
`golf.config.build_config(preset)` merges it (with its run scale) into a validated RunConfig; `golf run`
then sets `vocab_size` from the dataset, since a preset's vocab only says what the original run used.

The seed presets reproduce the architectures of the three research seeds (parameter-golf PRs/issues
#1127, #1550, #1554) as far as the public notes describe them; training-side settings (EMA, QAT, TTT,
optimiser) belong to the train config, not here. Each `tiny*` preset turns on the same switches as its
seed at dimensions that run in seconds on a laptop CPU, so every technique is exercised by the tests.
"""

from __future__ import annotations

from typing import Any

# Dims shared by the tiny presets: 4 heads of 16 dims, 2 KV heads, 128-token context.
_TINY = {"d_model": 64, "n_head": 4, "n_kv_head": 2, "max_seq_len": 128}

PRESETS: dict[str, dict[str, Any]] = {
    # parameter-golf baseline (train_gpt.py): all ModelConfig defaults. 17,059,912 parameters:
    #   token embedding (tied head)            1024 * 512                            =    524,288
    #   per block: c_q 512*512 + c_k 512*256 + c_v 512*256 + proj 512*512       =    786,432
    #              MLP fc 512*1024 + proj 1024*512                               =  1,048,576
    #              q_gain 8 + attn_scale 512 + mlp_scale 512 + resid_mix 2*512   =      2,056
    #              = 1,837,064 per block; 9 blocks                               = 16,533,576
    #   U-Net skip weights: min(4 encoder, 5 decoder) = 4 skips * 512            =      2,048
    #   total 524,288 + 16,533,576 + 2,048                                       = 17,059,912
    # (weightless RMSNorms, no biases, no separate head; RoPE tables are buffers, not parameters)
    "baseline": {},
    # Seed #1127: the strong stack of its era (11L x 512, MLP 3x LeakyReLU(0.5)^2, XSA on the last 4,
    # partial RoPE 16/64, SmearGate, BigramHash 8192 x 128 -- the notes' "seed: 8,192x128" --, LN scale).
    # sp1024 vocab. Its EMA 0.9985 is a train setting. 27,616,345 parameters.
    "seed1127": {
        "n_layer": 11,
        "mlp_mult": 3.0,
        "activation": "leaky_relu2",
        "xsa_last_n": 4,
        "rope_dims": 16,
        "smear_gate": True,
        "bigram_buckets": 8192,
        "bigram_dim": 128,
        "ln_scale": True,
    },
    # Seed #1550, the #1493 record stack: SP8192 vocab, 11L x 512, MLP 4x LeakyReLU^2, XSA on all
    # layers, partial RoPE 16, LN scale, layers 3-5 run once more (14 virtual layers) from 35% of
    # training, parallel residuals from layer 7, value embeddings of dim 44 on the last two layers.
    # q_gain_init 5.0 is the QK_GAIN_INIT default of the #1509 record code (seen in PR #1678's diff).
    # U-Net skips follow the virtual sequence: 7 skip weights with recurrence on. 36,311,642 parameters.
    "seed1550": {
        "vocab_size": 8192,
        "n_layer": 11,
        "mlp_mult": 4.0,
        "activation": "leaky_relu2",
        "xsa_last_n": 11,
        "rope_dims": 16,
        "ln_scale": True,
        "recur_start": 3,
        "recur_end": 6,
        "recur_repeats": 1,
        "recur_at_frac": 0.35,
        "parallel_from": 7,
        "ve_dim": 44,
        "ve_layers": [9, 10],
        "q_gain_init": 5.0,
    },
    # Seed #1554 (after #1193): a Universal Transformer, one shared block (d 512, 8 heads / 4 KV) looped
    # 12 times, sp1024, target 4,546,568 parameters. Our notes do not list its full stack; this one is
    # built from our switches (MLP 4x LeakyReLU^2 + BigramHash 8192 x 128, no U-Net skips):
    #   token embedding 1024*512                                         =   524,288
    #   BigramHash: 8192*128 table + 128*512 projection + 1 scale         = 1,114,113
    #   shared block: attention 786,432 + MLP 2*512*2048 = 2,097,152
    #                 + q_gain 8 + attn/mlp scales 2*512                 = 2,884,616
    #   per iteration: scale 512 + shift 512 + resid_mix 2*512 = 2,048, x 12 =    24,576
    #   total                                                              = 4,547,593 (+1,025, +0.023%)
    "seed1554": {
        "ut_loops": 12,
        "mlp_mult": 4.0,
        "activation": "leaky_relu2",
        "bigram_buckets": 8192,
        "bigram_dim": 128,
        "unet_skips": False,
        "ut_curriculum_frac": 0.5,
    },
    # Tiny: the baseline's switches at laptop scale (seconds per step on CPU).
    # the CPU scale ladder (golf/config.py LADDER_RUN): the baseline's skeleton, head dim 32
    "small": {"n_layer": 4, "d_model": 128, "n_head": 4, "n_kv_head": 2, "max_seq_len": 256},
    "medium": {"n_layer": 6, "d_model": 192, "n_head": 6, "n_kv_head": 3, "max_seq_len": 256},
    "tiny": {**_TINY, "n_layer": 2},
    "tiny1127": {
        **_TINY,
        "n_layer": 4,
        "mlp_mult": 3.0,
        "activation": "leaky_relu2",
        "xsa_last_n": 2,
        "rope_dims": 4,  # a quarter of the head dims, like 16/64
        "smear_gate": True,
        "bigram_buckets": 512,
        "bigram_dim": 16,
        "ln_scale": True,
    },
    "tiny1550": {
        **_TINY,
        "n_layer": 6,
        "mlp_mult": 4.0,
        "activation": "leaky_relu2",
        "xsa_last_n": 6,
        "rope_dims": 4,
        "ln_scale": True,
        "recur_start": 2,
        "recur_end": 4,
        "recur_repeats": 1,
        "recur_at_frac": 0.35,
        "parallel_from": 4,
        "ve_dim": 8,
        "ve_layers": [4, 5],
        "q_gain_init": 5.0,
    },
    "tiny1554": {
        **_TINY,
        "ut_loops": 4,
        "mlp_mult": 4.0,
        "activation": "leaky_relu2",
        "bigram_buckets": 512,
        "bigram_dim": 16,
        "unet_skips": False,
        "ut_curriculum_frac": 0.5,
    },
}

# Named override bundles: dotted config keys a study cell applies over its preset and overrides
# (`bundle` in a study YAML, last so that it wins). Each switches ONE technique of a seed stack off, for the
# architecture ablations (tiny1550 / tiny1127 carry the seeds' switches at CPU scale); "none" is the full
# stack every other bundle is read against. golf.study refuses a bundle that changes nothing in its cell.
BUNDLES: dict[str, dict[str, Any]] = {
    "none": {},
    "no_xsa": {"model.xsa_last_n": 0},  # exclusive self-attention (records #1127, #1493)
    "no_partial_rope": {"model.rope_dims": None},  # rotate every head dim instead of 16/64
    "no_smear_gate": {"model.smear_gate": False},  # previous-token embedding blend (#1127)
    "no_bigram_hash": {"model.bigram_buckets": 0},  # hashed bigram embedding (#1127)
    "no_ema": {"train.ema_decay": 0.0},  # weight EMA before quantization (records 0.997 / 0.9985)
    "no_leaky_relu2": {"model.activation": "relu2"},  # back to the baseline's ReLU^2
    "no_parallel_residuals": {"model.parallel_from": None},  # attention and MLP in sequence again (#1493)
    "no_recurrence": {"model.recur_start": None, "model.recur_end": None},  # depth recurrence (#1493)
    "no_value_embeddings": {"model.ve_dim": 0, "model.ve_layers": []},  # VE on the last layers (#1493)
    "no_ln_scale": {"model.ln_scale": False},  # 1/sqrt(layer+1) on the normed block input
}
