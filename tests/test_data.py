"""Shards, dataset building and inspection, and their refusals of bad input."""

import json

import numpy as np
import pytest

from golf.data.build import build_dataset, read_documents
from golf.data.dataset import Dataset, inspect_path
from golf.data.shards import HEADER_BYTES, MAGIC, read_header, read_shard, write_shard
from golf.errors import GolfError


def test_shard_round_trip_and_exact_layout(tmp_path):
    tokens = np.array([1, 5, 65535, 0, 7], dtype=np.uint16)
    path = tmp_path / "x_train_000000.bin"
    write_shard(path, tokens)
    raw = path.read_bytes()
    assert len(raw) == HEADER_BYTES + 2 * tokens.size
    header = np.frombuffer(raw[:HEADER_BYTES], dtype="<i4")
    assert header[:3].tolist() == [MAGIC, 1, 5] and not header[3:].any()
    assert np.frombuffer(raw[HEADER_BYTES:], dtype="<u2").tolist() == tokens.tolist()
    back = read_shard(path)
    assert isinstance(back, np.memmap)  # zero-copy
    assert back.tolist() == tokens.tolist()


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda raw: raw[:-1], "size"),
        (lambda raw: raw[:100], "truncated header"),
        (lambda raw: np.int32(123).tobytes() + raw[4:], "wrong magic"),
        (lambda raw: raw[:4] + np.int32(2).tobytes() + raw[8:], "version"),
        (lambda raw: raw + b"\0\0", "size"),
    ],
)
def test_broken_shards_are_refused(tmp_path, damage, message):
    path = tmp_path / "x_val_000000.bin"
    write_shard(path, np.arange(10, dtype=np.uint16))
    path.write_bytes(damage(path.read_bytes()))
    with pytest.raises(GolfError, match=message) as e:
        read_shard(path)
    assert str(path) in str(e.value) and "\n" not in str(e.value)


def test_foreign_file_refused(tmp_path):
    path = tmp_path / "notes_val_000000.bin"
    path.write_bytes(b"hello world" * 200)
    with pytest.raises(GolfError, match="wrong magic"):
        read_header(path)


def test_build_writes_contract_manifest(tiny_dataset):
    manifest = json.loads((tiny_dataset / "manifest.json").read_text())
    assert manifest["name"] == "tiny" and manifest["vocab_size"] == 512
    settings = manifest["tokenizer"]["settings"]
    assert settings["byte_fallback"] and settings["split_digits"] and settings["add_dummy_prefix"] is False
    assert settings["normalization_rule_name"] == "nmt_nfkc" and settings["character_coverage"] == 0.999
    assert manifest["val"]["docs"] == 4 and manifest["train"]["docs"] == 18 - 4
    report = inspect_path(tiny_dataset)
    assert report["val"]["tokens"] == manifest["val"]["tokens"]
    assert report["val"]["bytes"] == manifest["val"]["bytes"]
    assert report["train"]["shards"] == manifest["train"]["shards"] > 1  # 40k-token shards
    ds = Dataset.open(tiny_dataset)
    val = np.asarray(ds.val_tokens)
    assert val[0] == 1 and np.count_nonzero(val == 1) == 4  # BOS before every document
    assert ds.tokenizer.is_control(2) and not np.any(val == 2)  # no EOS


def test_split_is_by_document_and_deterministic(tmp_path, text_dir, tiny_dataset):
    docs = read_documents([text_dir])
    assert docs[0].startswith("CHAPTER 1.")  # sorted file order: the first K documents are validation
    again = build_dataset(
        [text_dir], vocab_size=512, out=tmp_path / "again", val_docs=4, name="tiny", shard_tokens=40_000
    )
    for f in sorted(p.name for p in tiny_dataset.iterdir()):
        assert (again / f).read_bytes() == (tiny_dataset / f).read_bytes(), f


def test_token_ids_at_or_above_vocab_are_refused(tmp_path, tiny_dataset):
    import shutil

    bad = tmp_path / "bad"
    shutil.copytree(tiny_dataset, bad)
    tokens = np.array(read_shard(bad / "tiny_val_000000.bin"))
    tokens[5] = 512
    write_shard(bad / "tiny_val_000000.bin", tokens)
    with pytest.raises(GolfError, match="token id 512 >= vocab size 512"):
        Dataset.open(bad).describe()


def test_missing_tokenizer_and_empty_input(tmp_path, tiny_dataset):
    import shutil

    bad = tmp_path / "notok"
    shutil.copytree(tiny_dataset, bad)
    (bad / "tiny_512_bpe.model").unlink()
    with pytest.raises(GolfError, match="missing tokenizer"):
        Dataset.open(bad)
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "a.txt").write_text("   \n")
    with pytest.raises(GolfError, match="no non-empty documents"):
        build_dataset([empty], vocab_size=512, out=tmp_path / "out", val_docs=1)
    assert not (tmp_path / "out").exists()


def test_bad_jsonl_fails_without_output(tmp_path):
    src = tmp_path / "docs.jsonl"
    src.write_text('{"text": "fine"}\n{"txt": "no text field"}\n')
    with pytest.raises(GolfError, match="docs.jsonl:2"):
        build_dataset([src], vocab_size=512, out=tmp_path / "out", val_docs=1)
    assert not (tmp_path / "out").exists()


def test_reads_parameter_golf_layout_as_is(tmp_path, tiny_dataset):
    """datasets/fineweb10B_sp512/fineweb_*.bin with the tokenizer in tokenizers/, no manifest."""
    import shutil

    root = tmp_path / "data"
    shards = root / "datasets" / "fineweb10B_sp512"
    shards.mkdir(parents=True)
    (root / "tokenizers").mkdir()
    shutil.copy(tiny_dataset / "tiny_512_bpe.model", root / "tokenizers" / "fineweb_512_bpe.model")
    for p in tiny_dataset.glob("tiny_*.bin"):
        shutil.copy(p, shards / p.name.replace("tiny_", "fineweb_"))
    ds = Dataset.open(shards)
    assert ds.name == "fineweb" and ds.vocab_size == 512
    assert ds.val_bytes == json.loads((tiny_dataset / "manifest.json").read_text())["val"]["bytes"]
