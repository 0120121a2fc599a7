"""The metric every number stands on: byte tables and bits per byte."""

import math

import numpy as np
import pytest

from golf.data.dataset import Dataset
from golf.errors import GolfError
from golf.metric import BpbMeter, ByteTable, bits_per_byte, build_byte_table, stream_bytes, token_bytes


def _docs(tokens):
    """Split a BOS-separated stream into documents (each starting with BOS)."""
    starts = np.flatnonzero(tokens == 1)
    return [tokens[s:e] for s, e in zip(starts, list(starts[1:]) + [len(tokens)])]


def test_table_bytes_equal_decoded_utf8_for_every_val_document(tiny_dataset):
    ds = Dataset.open(tiny_dataset)
    sp, table = ds.tokenizer, ds.byte_table
    docs = _docs(np.asarray(ds.val_tokens))
    assert len(docs) == 4
    for doc in docs:
        decoded = sp.decode(doc[1:].tolist())
        assert stream_bytes(table, doc) == len(decoded.encode("utf-8"))
    # and over the whole stream (documents joined by BOS, which stands for no text)
    assert ds.val_bytes == sum(len(sp.decode(d[1:].tolist()).encode("utf-8")) for d in docs)


def test_train_documents_too(tiny_dataset):
    ds = Dataset.open(tiny_dataset)
    docs = _docs(np.asarray(ds.train_tokens(0)))[1:6]
    for doc in docs:
        assert stream_bytes(ds.byte_table, doc) == len(ds.tokenizer.decode(doc[1:].tolist()).encode("utf-8"))


def test_space_after_bos_counts_zero(tiny_dataset):
    ds = Dataset.open(tiny_dataset)
    sp, table = ds.tokenizer, ds.byte_table
    the = sp.piece_to_id("\u2581the")
    assert the != sp.unk_id() and table.has_space[the]
    bos = sp.bos_id()
    plain = sp.piece_to_id("a") if sp.piece_to_id("a") != sp.unk_id() else sp.piece_to_id("e")
    # after a normal token the space is one byte of text; after BOS it is none
    assert token_bytes(table, np.array([plain]), np.array([the]))[0] == 4
    assert token_bytes(table, np.array([bos]), np.array([the]))[0] == 3


def test_byte_fallback_pieces_count_one_byte(tiny_dataset):
    ds = Dataset.open(tiny_dataset)
    sp, table = ds.tokenizer, ds.byte_table
    byte_ids = [i for i in range(sp.get_piece_size()) if sp.is_byte(i)]
    assert len(byte_ids) == 256
    assert all(table.base_bytes[i] == 1 and not table.has_space[i] for i in byte_ids)
    # a character outside the vocabulary is spelled in bytes: 3 UTF-8 bytes -> 3 tokens of 1 byte
    ids = sp.encode("\u4e2d")  # a CJK character, absent from English training text
    assert all(sp.is_byte(i) for i in ids) and len(ids) == 3
    assert stream_bytes(table, np.array([sp.bos_id(), *ids])) == 3


def test_unknown_and_control_tokens_are_boundaries(tiny_dataset):
    ds = Dataset.open(tiny_dataset)
    sp, table = ds.tokenizer, ds.byte_table
    for special in (sp.pad_id(), sp.bos_id(), sp.eos_id(), sp.unk_id()):
        assert table.is_boundary[special] and table.base_bytes[special] == 0
    the = sp.piece_to_id("\u2581the")
    # a ▁-piece after an unknown token: its space is not counted either
    assert token_bytes(table, np.array([sp.unk_id()]), np.array([the]))[0] == 3


def test_hand_computed_example():
    """Five-token vocabulary worked by hand."""

    class FakeSP:  # the minimal SentencePiece surface build_byte_table reads; pieces chosen by hand
        pieces = ["<pad>", "<s>", "<0x41>", "\u2581h\u00e9", "llo"]

        def get_piece_size(self):
            return 5

        def is_control(self, i):
            return i in (0, 1)

        def is_unknown(self, i):
            return False

        def is_unused(self, i):
            return False

        def is_byte(self, i):
            return i == 2

        def id_to_piece(self, i):
            return self.pieces[i]

    table = build_byte_table(FakeSP())
    assert table.base_bytes.tolist() == [0, 0, 1, 3, 3]  # "hé" is 3 UTF-8 bytes without its ▁
    # stream: <s> ▁hé llo <0x41> ▁hé  -> 0 (after BOS: no space) + 3 + 3 + 1 + (3+1) = 11 bytes
    assert stream_bytes(table, np.array([1, 3, 4, 2, 3])) == 3 + 3 + 1 + 4
    # losses of ln 2 nats per token = 1 bit each, 4 tokens over 11 bytes
    meter = BpbMeter(table)
    meter.add(np.full(4, math.log(2)), np.array([1, 3, 4, 2]), np.array([3, 4, 2, 3]))
    assert meter.tokens == 4 and meter.bytes == 11
    assert meter.val_bpb == pytest.approx(4 / 11, abs=1e-15)
    assert meter.val_loss == pytest.approx(math.log(2))


def test_meter_accumulates_float32_losses_in_float64():
    table = ByteTable(np.array([0, 1]), np.array([False, False]), np.array([True, False]))
    loss32 = np.full(1_000_000, 0.1, dtype=np.float32)
    meter = BpbMeter(table)
    for _ in range(10):  # 10M scored tokens in chunks, as an evaluation loop feeds them
        meter.add(loss32, np.ones(loss32.size, dtype=np.int64), np.ones(loss32.size, dtype=np.int64))
    exact = 10_000_000 * float(np.float32(0.1))
    assert meter.nats == pytest.approx(exact, rel=1e-12)
    # a float32 running sum would be visibly wrong: this is what the float64 sum protects against
    assert abs(float(np.cumsum(np.tile(loss32, 10), dtype=np.float32)[-1]) - exact) / exact > 1e-4
    assert meter.val_bpb == pytest.approx(exact / math.log(2) / 10_000_000, rel=1e-12)
    with pytest.raises(GolfError):
        bits_per_byte(1.0, 0)
