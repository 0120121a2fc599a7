"""The artifact file: byte-exact compressors, exact sizes, integrity failures, no pickle, code bytes."""

from __future__ import annotations

import json
import os
import pickle

import pytest
import torch
from torch import nn

from golf.artifact import (
    FILE_HEADER_BYTES,
    byte_report,
    inspect_artifact,
    load_artifact,
    save_artifact,
)
from golf.compress import COMPRESSORS, byte_shuffle, byte_unshuffle, compress, decompress
from golf.errors import GolfError
from golf.quant import QuantConfig, dequantize_state, quantize_state_dict

CONTRACT_KEYS = {"bytes_model", "bytes_code", "bytes_total", "limit", "fits", "quant", "compressor", "path"}


def small_state() -> dict[str, torch.Tensor]:
    """A small real network's state: an embedding, a 2-layer MLP with biases, a gain, an int buffer."""
    torch.manual_seed(0)
    net = nn.Module()
    net.tok_emb = nn.Embedding(48, 32)
    net.fc = nn.Linear(32, 96)
    net.proj = nn.Linear(96, 32)
    net.attn_scale = nn.Parameter(torch.ones(32))
    net.register_buffer("step", torch.tensor(12345, dtype=torch.int64))
    return net.state_dict()


def quantized(method: str = "int6", **kw) -> tuple[dict, QuantConfig, object]:
    sd = small_state()
    cfg = QuantConfig(method=method, keep_fp16_max_numel=64, **kw)
    return sd, cfg, quantize_state_dict(sd, cfg)


# ---------------------------------------------------------------------------------------------------------
# Compressors and shuffle
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(COMPRESSORS))
@pytest.mark.parametrize("itemsize", [1, 2, 4])
def test_compressors_round_trip_byte_exact_with_and_without_shuffle(name, itemsize):
    g = torch.Generator().manual_seed(itemsize)
    data = (torch.randn(3000, generator=g) * 0.02).half().numpy().tobytes()  # 6000 bytes: any itemsize
    shuffled = byte_shuffle(data, itemsize)
    assert len(shuffled) == len(data)
    assert byte_unshuffle(shuffled, itemsize) == data
    for payload in (data, shuffled):
        packed = compress(name, payload)
        assert decompress(name, packed) == payload
    assert decompress(name, compress(name, b"")) == b""


def test_shuffle_groups_bytes_by_position():
    assert byte_shuffle(b"a0b0c0", 2) == b"abc000"
    assert byte_shuffle(b"abcd", 1) == b"abcd"
    with pytest.raises(GolfError, match="whole number"):
        byte_shuffle(b"abc", 2)


@pytest.mark.parametrize("name", sorted(COMPRESSORS))
def test_corrupt_stream_raises_golf_error(name):
    packed = compress(name, bytes(range(256)) * 40)
    with pytest.raises(GolfError, match="truncated or corrupt"):
        decompress(name, packed[: len(packed) // 2])


def test_unknown_compressor_is_a_golf_error():
    with pytest.raises(GolfError, match="unknown"):
        compress("gzip", b"x")


# ---------------------------------------------------------------------------------------------------------
# Save / load
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("compressor", sorted(COMPRESSORS))
@pytest.mark.parametrize("shuffle", [False, True])
def test_save_returns_file_size_and_round_trips_exactly(tmp_path, compressor, shuffle):
    sd, cfg, qs = quantized("int6", compressor=compressor, shuffle=shuffle)
    path = tmp_path / "model.golf"
    n = save_artifact(path, qs, cfg)
    assert n == os.path.getsize(path)
    back = load_artifact(path)
    assert back.label == "int6" and back.config == cfg.to_dict()
    want, got = dequantize_state(qs), dequantize_state(back)
    assert list(got) == list(sd)
    for k in want:
        assert got[k].dtype == want[k].dtype and torch.equal(got[k], want[k]), k
    for a, b in zip(qs.records, back.records):
        assert (a.name, a.kind, a.shape, a.dtype, a.bits, a.method) == (
            b.name,
            b.kind,
            b.shape,
            b.dtype,
            b.bits,
            b.method,
        )
        assert torch.equal(a.data, b.data)


def test_int8_artifact_is_smaller_than_float_and_int6_smaller_still(tmp_path):
    def sizes_of(sd):
        out = {}
        for method in ("int8", "int6", "int4"):
            cfg = QuantConfig(method=method, keep_fp16_max_numel=64, compressor="zstd")
            out[method] = save_artifact(tmp_path / f"{method}.golf", quantize_state_dict(sd, cfg), cfg)
        return out

    # weights x10: every row's clip is above 1.0, so int8 uses its full 8 bits
    sd = {k: v * 10 if v.is_floating_point() else v for k, v in small_state().items()}
    raw_fp32 = sum(t.numel() * t.element_size() for t in sd.values())
    sizes = sizes_of(sd)
    assert sizes["int4"] < sizes["int6"] < sizes["int8"] < raw_fp32 / 3
    # at init scale (|w| < 0.2) the baseline's scale floor of 1/127 makes int8 coarser than int6's
    # rowmax grid (rowmax/31 < 1/127), so its artifact is the smaller one
    init = sizes_of(small_state())
    assert init["int8"] < init["int6"]


def test_truncated_file_raises(tmp_path):
    _, cfg, qs = quantized(compressor="zlib")
    path = tmp_path / "a.golf"
    size = save_artifact(path, qs, cfg)
    data = path.read_bytes()
    for keep in (10, FILE_HEADER_BYTES + 5, size - 1):
        path.write_bytes(data[:keep])
        with pytest.raises(GolfError, match="truncated"):
            load_artifact(path)


@pytest.mark.parametrize("compressor", sorted(COMPRESSORS))
def test_any_altered_byte_raises(tmp_path, compressor):
    _, cfg, qs = quantized(compressor=compressor, shuffle=True)
    path = tmp_path / "a.golf"
    size = save_artifact(path, qs, cfg)
    data = path.read_bytes()
    # magic, version, compressor id, length, sha256, start / middle / end of the compressed stream
    positions = [0, 7, 8, 9, 20, FILE_HEADER_BYTES, (FILE_HEADER_BYTES + size) // 2, size - 1]
    for pos in positions:
        altered = bytearray(data)
        altered[pos] ^= 0x5A
        path.write_bytes(bytes(altered))
        with pytest.raises(GolfError, match=r"artifact .*a\.golf") as err:
            load_artifact(path)
        msg = str(err.value)
        assert any(w in msg for w in ("checksum mismatch", "truncated", "magic", "version", "compressor")), (
            msg
        )


def test_loading_never_unpickles(tmp_path, monkeypatch):
    _, cfg, qs = quantized("int8", compressor="lzma")
    path = tmp_path / "a.golf"
    save_artifact(path, qs, cfg)

    def refuse(*args, **kwargs):
        raise AssertionError("pickle must not be used to load an artifact")

    for attr in ("load", "loads", "Unpickler"):
        monkeypatch.setattr(pickle, attr, refuse)
    monkeypatch.setattr(torch, "load", refuse)
    back = dequantize_state(load_artifact(path))
    assert torch.equal(back["fc.weight"], dequantize_state(qs)["fc.weight"])
    assert b"pickle" not in path.read_bytes()


def test_missing_file_is_a_golf_error(tmp_path):
    with pytest.raises(GolfError, match="cannot read"):
        load_artifact(tmp_path / "nope.golf")


# ---------------------------------------------------------------------------------------------------------
# Byte accounting
# ---------------------------------------------------------------------------------------------------------


def test_byte_report_has_the_contract_keys(tmp_path):
    _, cfg, qs = quantized("int6", compressor="brotli")
    path = tmp_path / "a.golf"
    size = save_artifact(path, qs, cfg)
    rep = byte_report(path, code_bytes=1234)
    assert set(rep) == CONTRACT_KEYS
    assert rep["bytes_model"] == size and rep["bytes_total"] == size + 1234
    assert rep["limit"] == 16_000_000 and rep["fits"] is True
    assert rep["quant"] == "int6" and rep["compressor"] == "brotli" and rep["path"] == str(path)
    assert byte_report(path, code_bytes=1234, limit=size + 1233)["fits"] is False
    assert byte_report(path, code_bytes=1234, limit=size + 1234)["fits"] is True


def test_inspect_totals_are_consistent_with_the_file(tmp_path):
    sd, cfg, qs = quantized("int6", compressor="zstd", shuffle=True)
    path = tmp_path / "a.golf"
    size = save_artifact(path, qs, cfg)
    rep = inspect_artifact(path)
    json.dumps(rep)  # plain JSON, for `golf artifact inspect --json`
    tot = rep["totals"]
    assert tot["bytes_file"] == size == FILE_HEADER_BYTES + tot["bytes_compressed_stream"]
    assert tot["tensors"] == len(sd) == len(rep["tensors"])
    assert tot["bytes_raw"] == qs.nbytes() == sum(t["bytes_raw"] for t in rep["tensors"])
    # payload = container header + every stored buffer
    assert tot["bytes_payload"] == tot["bytes_container_header"] + tot["bytes_raw"]
    assert abs(sum(t["share"] for t in rep["tensors"]) - 1) < 1e-9
    by_name = {t["name"]: t for t in rep["tensors"]}
    assert by_name["fc.weight"]["kind"] == "int6" and by_name["fc.weight"]["entropy_bits"] <= 6
    # order-0 bound of the int6 symbols is below their int8 containers
    fc = by_name["fc.weight"]
    assert fc["entropy_bound_bytes"] < fc["bytes_raw"]
    assert tot["entropy_bound_bytes"] == pytest.approx(sum(t["entropy_bound_bytes"] for t in rep["tensors"]))
    assert tot["file_over_entropy_bound"] == pytest.approx(size / tot["entropy_bound_bytes"])


