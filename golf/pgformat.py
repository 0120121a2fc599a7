"""Reading the reference's files: `final_model.pt` and `final_model.int8.ptz` from parameter-golf's train_gpt.py.

The challenge's baseline script (train_gpt.py) writes two files at the end of a run:

    final_model.pt         torch.save(model.state_dict()): a flat dict of tensor name -> tensor
    final_model.int8.ptz   zlib.compress(torch.save(obj), 9), obj the int8 export (format tag
                           "int8_clean_per_row_v1"): {"quantized": name -> int8 symbols, "scales": name ->
                           fp16 per-row scales (or a 0-dim fp32 per-tensor scale), "dtypes": name -> the
                           original dtype, "passthrough": name -> small tensors kept in float (fp16 unless
                           a control tensor), optional "qmeta", optional "passthrough_orig_dtypes"}

`golf import` reads either into golf's `GPT` (whose tensor names are the baseline's) and writes a run
folder (`config.json`, `checkpoint.pt` in the file's dtypes, `import.json`) that `golf run --from RUN_DIR` then takes through TTT,
quantization and scoring like a model golf trained itself.

Safety: a torch.save file is a zip archive holding a pickle. We look at the archive before unpickling (a
zip with exactly one `data.pkl`, a bounded decompressed size for the .ptz), unpickle only with
`torch.load(weights_only=True)` (tensors, dicts, strings and numbers; no code), and then check that the
object has the structure above, tensor by tensor. Anything else is refused with one line saying what the
file is not.

Dequantization follows the format's definition: per-row w[r] = q[r] * s[r] (s read as float32), per-tensor
w = q * s, each cast to its recorded dtype; passthrough tensors cast back to their recorded original dtype.
golf's model then holds them in float32 (which represents bf16 and fp16 values exactly); `golf run --from`
hands the quantizer each tensor in its original dtype again, so a bf16 embedding is exported and read back
through bf16 as the reference's round trip does.

`load_script_definitions` imports a train_gpt.py as a module without running its `main()` (the parity tests
and benchmarks/parity_speed.py use the reference's own functions that way).
"""

from __future__ import annotations

import hashlib
import importlib.util
import io
import json
import re
import sys
import types
import zipfile
import zlib
from pathlib import Path

import torch

from golf.errors import GolfError

PG_QUANT_FORMAT = "int8_clean_per_row_v1"  # the baseline's export format tag
# final_model.pt; final_model.int8.ptz; the same int8 export saved without zlib
FORMATS = ("pg_state_dict", "pg_int8_zlib", "pg_int8_uncompressed")
# The decompressed .ptz may not exceed this: a 16 MB artifact inflates to ~20 MB; 1 GiB is far beyond any
# real one and stops a zlib bomb before it fills memory.
MAX_DECOMPRESSED_BYTES = 1 << 30
_ZIP_MAGIC = b"PK\x03\x04"
_GOLF_ARTIFACT_MAGIC = b"GOLFART"
_FLOAT_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
# Compiled or DDP-wrapped models save their parameters under one of these prefixes.
_WRAPPER_PREFIXES = ("_orig_mod.", "module.")


# ---------------------------------------------------------------------------------------------------------
# Reading a file
# ---------------------------------------------------------------------------------------------------------


def _inflate(blob: bytes, where: str) -> bytes:
    """zlib-decompress at most MAX_DECOMPRESSED_BYTES; a stream that is longer or broken is refused."""
    d = zlib.decompressobj()
    try:
        raw = d.decompress(blob, MAX_DECOMPRESSED_BYTES)
    except zlib.error as e:
        raise GolfError(f"{where}: not a valid zlib stream ({e})") from None
    if d.unconsumed_tail:
        raise GolfError(f"{where}: decompresses to more than {MAX_DECOMPRESSED_BYTES} bytes; refusing it")
    if not d.eof:
        raise GolfError(f"{where}: zlib stream is truncated")
    return raw


def _torch_load(raw: bytes, where: str):
    """torch.load(weights_only=True) of a torch.save zip archive, after checking that it is one."""
    if not raw.startswith(_ZIP_MAGIC):
        raise GolfError(f"{where}: not a torch.save file (no zip archive inside)")
    try:
        with zipfile.ZipFile(io.BytesIO(raw)) as z:
            names = z.namelist()
    except zipfile.BadZipFile as e:
        raise GolfError(f"{where}: damaged torch.save archive ({e})") from None
    if sum(1 for n in names if n.endswith("/data.pkl") or n == "data.pkl") != 1:
        raise GolfError(f"{where}: not a torch.save archive (expected one data.pkl, found {len(names)} members)")
    try:
        return torch.load(io.BytesIO(raw), map_location="cpu", weights_only=True)
    except Exception as e:  # UnpicklingError for anything but tensors and containers, RuntimeError for damage
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise GolfError(f"{where}: refused by torch.load(weights_only=True): {reason}") from None


def _tensor_dict(obj, where: str, what: str) -> dict[str, torch.Tensor]:
    if not isinstance(obj, dict) or not obj:
        raise GolfError(f"{where}: {what} must be a non-empty dict of tensors, got {type(obj).__name__}")
    for k, v in obj.items():
        if not isinstance(k, str) or not isinstance(v, torch.Tensor):
            raise GolfError(f"{where}: {what}[{k!r}] is a {type(v).__name__}, not a tensor under a string name")
    return dict(obj)


def _str_dict(obj, where: str, what: str, allowed: dict) -> dict[str, str]:
    if not isinstance(obj, dict):
        raise GolfError(f"{where}: {what} must be a dict, got {type(obj).__name__}")
    for k, v in obj.items():
        if not isinstance(k, str) or v not in allowed:
            raise GolfError(f"{where}: {what}[{k!r}] = {v!r} is not one of {sorted(allowed)}")
    return dict(obj)


def dequantize_pg_int8(obj: dict, where: str = "int8 export") -> dict[str, torch.Tensor]:
    """The tensors of a checked `int8_clean_per_row_v1` object, each in its recorded dtype."""
    quantized = _tensor_dict(obj.get("quantized"), where, "quantized")
    scales = _tensor_dict(obj.get("scales"), where, "scales")
    dtypes = _str_dict(obj.get("dtypes"), where, "dtypes", _FLOAT_DTYPES)
    passthrough = _tensor_dict(obj.get("passthrough"), where, "passthrough")
    orig = _str_dict(obj.get("passthrough_orig_dtypes", {}), where, "passthrough_orig_dtypes", _FLOAT_DTYPES)
    qmeta = obj.get("qmeta", {})
    if not isinstance(qmeta, dict):
        raise GolfError(f"{where}: qmeta must be a dict, got {type(qmeta).__name__}")
    if set(scales) != set(quantized) or set(dtypes) != set(quantized):
        raise GolfError(f"{where}: quantized, scales and dtypes name different tensors")
    if set(passthrough) & set(quantized):
        raise GolfError(f"{where}: {sorted(set(passthrough) & set(quantized))[0]!r} is both quantized and passed through")
    unknown = set(obj) - {"__quant_format__", "quantized", "scales", "dtypes", "passthrough", "qmeta",
                          "passthrough_orig_dtypes"}
    if unknown:
        raise GolfError(f"{where}: unexpected key(s) {sorted(unknown)} for format {PG_QUANT_FORMAT}")

    out: dict[str, torch.Tensor] = {}
    for name, q in quantized.items():
        s = scales[name]
        if q.dtype != torch.int8 or q.dim() < 1:
            raise GolfError(f"{where}: quantized[{name!r}] must hold int8 symbols, got {q.dtype} {tuple(q.shape)}")
        if not s.is_floating_point() or not torch.isfinite(s).all():
            raise GolfError(f"{where}: scales[{name!r}] must be finite floats")
        if s.dim() > 0:  # one scale per row (axis 0), broadcast over the trailing dims
            if tuple(s.shape) != (q.shape[0],):
                raise GolfError(f"{where}: scales[{name!r}] has shape {tuple(s.shape)}, expected ({q.shape[0]},)")
            w = q.float() * s.float().view(-1, *([1] * (q.dim() - 1)))
        else:  # one scale for the whole tensor
            w = q.float() * float(s)
        out[name] = w.to(_FLOAT_DTYPES[dtypes[name]])
    for name, t in passthrough.items():
        out[name] = t.to(_FLOAT_DTYPES[orig[name]]) if name in orig else t
    return out


def read_pg_file(path: str | Path) -> tuple[dict[str, torch.Tensor], dict]:
    """A reference checkpoint or int8 artifact -> (state dict in its saved dtypes, facts about the file)."""
    path = Path(path)
    where = str(path)
    if not path.is_file():
        raise GolfError(f"{where}: file not found")
    blob = path.read_bytes()
    info = {"path": str(path.resolve()), "bytes": len(blob), "sha256": hashlib.sha256(blob).hexdigest()}
    if blob.startswith(_GOLF_ARTIFACT_MAGIC):
        raise GolfError(f"{where}: is a golf artifact; golf import reads the reference's final_model.pt or "
                        "final_model.int8.ptz (a golf run folder is used with golf run --from directly)")
    if blob.startswith(_ZIP_MAGIC):
        obj = _torch_load(blob, where)
        info["format"] = "pg_state_dict"
    elif blob[:1] == b"\x78":  # zlib header byte (deflate, 32 KiB window), as zlib.compress writes
        obj = _torch_load(_inflate(blob, where), where)
        info["format"] = "pg_int8_zlib"
    else:
        raise GolfError(f"{where}: neither a torch.save file (final_model.pt) nor a zlib-compressed one "
                        "(final_model.int8.ptz)")
    if isinstance(obj, dict) and "__quant_format__" in obj:
        if obj["__quant_format__"] != PG_QUANT_FORMAT:
            raise GolfError(f"{where}: quantization format {obj['__quant_format__']!r} is not the baseline's "
                            f"{PG_QUANT_FORMAT!r}")
        info["format"] = "pg_int8_zlib" if info["format"] == "pg_int8_zlib" else "pg_int8_uncompressed"
        state = dequantize_pg_int8(obj, where)
    else:
        if info["format"] == "pg_int8_zlib":
            raise GolfError(f"{where}: compressed, but holds no {PG_QUANT_FORMAT!r} export")
        state = _tensor_dict(obj, where, "the state dict")
    for prefix in _WRAPPER_PREFIXES:  # torch.compile / DDP wrappers: every name carries the same prefix
        if all(k.startswith(prefix) for k in state):
            state = {k[len(prefix):]: v for k, v in state.items()}
    for name, t in state.items():
        if t.is_floating_point() and not torch.isfinite(t).all():
            raise GolfError(f"{where}: tensor {name!r} contains inf/nan")
    info["dtypes"] = sorted({str(t.dtype).removeprefix("torch.") for t in state.values()})
    return state, info


# ---------------------------------------------------------------------------------------------------------
# Mapping onto golf's model
# ---------------------------------------------------------------------------------------------------------


def model_overrides_from_state(state: dict[str, torch.Tensor], where: str = "checkpoint") -> dict:
    """The ModelConfig keys a baseline state dict fixes: widths, depth, heads, MLP size, tied head.

    What the tensors cannot tell (logit_softcap, rope_base) keeps the baseline's value unless the caller
    overrides it; `check_state_fits` then verifies every name and shape against the built model.
    """
    def shape(name: str) -> tuple[int, ...]:
        if name not in state:
            raise GolfError(f"{where}: no tensor {name!r}; not a checkpoint of the baseline's GPT")
        return tuple(state[name].shape)

    vocab, d_model = shape("tok_emb.weight")
    layers = {int(m.group(1)) for k in state if (m := re.match(r"blocks\.(\d+)\.", k))}
    if not layers or layers != set(range(len(layers))):
        raise GolfError(f"{where}: blocks must be numbered 0..n-1, found {sorted(layers)[:12]}")
    (n_head,) = shape("blocks.0.attn.q_gain")
    if n_head < 1 or d_model % n_head:
        raise GolfError(f"{where}: {n_head} heads do not divide the width {d_model}")
    head_dim = d_model // n_head
    kv_rows = shape("blocks.0.attn.c_k.weight")[0]
    hidden = shape("blocks.0.mlp.fc.weight")[0]
    return {"vocab_size": vocab, "d_model": d_model, "n_layer": len(layers), "n_head": n_head,
            "n_kv_head": kv_rows // head_dim, "mlp_mult": hidden / d_model,
            "tie_embeddings": "lm_head.weight" not in state}


def check_state_fits(model: torch.nn.Module, state: dict[str, torch.Tensor], where: str = "checkpoint") -> None:
    """Every tensor name and shape of `state` is the model's, and nothing is missing."""
    mine = model.state_dict()
    extra = sorted(set(state) - set(mine))
    if extra:
        raise GolfError(f"{where}: tensor {extra[0]!r} (and {len(extra) - 1} more) is not part of the baseline "
                        "architecture golf maps; golf import reads checkpoints of the reference train_gpt.py")
    missing = sorted(set(mine) - set(state))
    if missing:
        raise GolfError(f"{where}: tensor {missing[0]!r} (and {len(missing) - 1} more) is missing")
    for name, t in state.items():
        if tuple(t.shape) != tuple(mine[name].shape):
            raise GolfError(f"{where}: tensor {name!r} has shape {tuple(t.shape)}, the model expects "
                            f"{tuple(mine[name].shape)}")


def import_reference(path: str | Path, out: str | Path, data: str | None = None,
                     overrides: list[str] | None = None) -> dict:
    """`golf import PATH --out RUN_DIR`: read, map onto golf's GPT, write the run folder; returns import.json."""
    from golf.config import build_config
    from golf.io import atomic_dir, write_json
    from golf.model import GPT

    out = Path(out)
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not (out / "import.json").exists())):
        raise GolfError(f"{out}: exists and is not an earlier golf import; choose a new folder for --out")
    state, info = read_pg_file(path)
    model_keys = model_overrides_from_state(state, str(path))
    # the inferred keys first, then --data, then the user's -s (which may set what the tensors cannot tell)
    pairs = [f"model.{k}={json.dumps(v)}" for k, v in model_keys.items()]
    pairs += [f"data.path={data}"] if data else []
    cfg = build_config(preset="baseline", overrides=pairs + list(overrides or []))
    if any(k in model_keys and cfg.model.to_dict()[k] != v for k, v in model_keys.items()):
        raise GolfError("golf import: the checkpoint fixes model." + ", model.".join(model_keys)
                        + "; override only what it cannot tell (e.g. model.logit_softcap, model.rope_base)")
    with torch.device("meta"):  # names and shapes only
        check_state_fits(GPT(cfg.model), state, str(path))
    if data:
        from golf.data.dataset import Dataset

        vocab = Dataset.open(data).vocab_size
        if vocab != cfg.model.vocab_size:
            raise GolfError(f"{path}: the model's vocabulary is {cfg.model.vocab_size} tokens, the dataset "
                            f"{data} has {vocab}")
    info.update({"params": sum(int(t.numel()) for t in state.values()), "tensors": len(state),
                 "model": model_keys})
    with atomic_dir(out) as tmp:
        torch.save(state, tmp / "checkpoint.pt")  # the file's own dtypes (golf run --from records them)
        write_json(tmp / "config.json", cfg.to_dict())
        write_json(tmp / "import.json", info)
    return info


# ---------------------------------------------------------------------------------------------------------
# The reference script's own definitions
# ---------------------------------------------------------------------------------------------------------


def load_script_definitions(path: str | Path, name: str = "pg_reference_train_gpt") -> types.ModuleType:
    """Import a train_gpt.py as a module: its definitions run, its `main()` does not.

    The baseline calls main() only under `if __name__ == "__main__"`, so importing it under another name
    defines its classes and functions (and reads its env-var hyperparameters) without touching CUDA.
    """
    path = Path(path)
    if not path.is_file():
        raise GolfError(f"{path}: file not found")
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise GolfError(f"{path}: cannot be imported as a Python module")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses and pickling look modules up by name
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(name, None)
        raise
    return module


__all__ = ["FORMATS", "MAX_DECOMPRESSED_BYTES", "PG_QUANT_FORMAT", "check_state_fits", "dequantize_pg_int8",
           "import_reference", "load_script_definitions", "model_overrides_from_state", "read_pg_file"]
