"""The memorization probe's halves: documents drawn at random, stratified by source, recorded per run.

Built on real text (the committed Moby Dick chapters and Lincoln addresses, labelled by work): a dataset
whose JSONL input names each document's source records it in the manifest, and the probe deals each
source's documents evenly into halves A and B.
"""

import json
from pathlib import Path

import numpy as np
import pytest

from golf.config import build_config
from golf.data.build import build_dataset
from golf.data.dataset import Dataset
from golf.data.shards import BOS_ID
from golf.evaluate import probe_halves
from golf.metric import stream_bytes
from golf.run import run
from golf.windows import probe_split

TEXT = Path(__file__).parent / "fixtures" / "text"


@pytest.fixture(scope="module")
def labelled_dataset(tmp_path_factory) -> Path:
    """The fixture texts as JSONL with a `source` per document (moby_dick / lincoln), the two Lincoln
    addresses and eight chapters first (validation: 10 documents of both works); sp512."""
    root = tmp_path_factory.mktemp("labelled")
    moby = [p.read_text() for p in sorted(TEXT.glob("moby_dick_*.txt"))]
    lincoln = [json.loads(line)["text"] for line in (TEXT / "sotu_1861_1862.jsonl").read_text().splitlines()]
    docs = [(t, "lincoln") for t in lincoln] + [(t, "moby_dick") for t in moby]
    lines = [json.dumps({"text": text, "source": source}) for text, source in docs]
    (root / "docs.jsonl").write_text("\n".join(lines) + "\n")
    return build_dataset([root / "docs.jsonl"], vocab_size=512, out=root / "ds", val_docs=10, name="lab",
                         shard_tokens=1_000_000)  # one training shard: its tail can match half A's budget


def test_the_manifest_records_each_validation_documents_source(labelled_dataset):
    ds = Dataset.open(labelled_dataset)
    assert ds.val_doc_sources == ["lincoln"] * 2 + ["moby_dick"] * 8
    assert int(np.count_nonzero(np.asarray(ds.val_tokens) == BOS_ID)) == 10


def test_split_zero_is_the_contiguous_halves(labelled_dataset):
    tokens = np.asarray(Dataset.open(labelled_dataset).val_tokens)
    stream, a, b, split = probe_halves(tokens, BOS_ID, None, 0, False)
    assert stream is tokens and a.tolist() == [0, 1, 2, 3, 4] and b.tolist() == [5, 6, 7, 8, 9]
    assert split == probe_split(np.flatnonzero(tokens == BOS_ID), tokens.size)


@pytest.mark.parametrize("k", [1, 2, 3])
def test_drawn_halves_are_stratified_reordered_and_keep_every_byte(labelled_dataset, k):
    ds = Dataset.open(labelled_dataset)
    tokens, sources = np.asarray(ds.val_tokens), ds.val_doc_sources
    stream, a, b, split = probe_halves(tokens, BOS_ID, sources, k, False)
    assert sorted(a.tolist() + b.tolist()) == list(range(10))
    for source in set(sources):  # each work split evenly between the halves
        in_a = sum(sources[i] == source for i in a)
        in_b = sum(sources[i] == source for i in b)
        assert abs(in_a - in_b) <= 1, (source, in_a, in_b)
    starts = np.flatnonzero(tokens == BOS_ID)
    ends = np.append(starts[1:], tokens.size)
    docs = [tokens[s:e] for s, e in zip(starts, ends)]
    expect = np.concatenate([docs[i] for i in list(a) + list(b)])
    assert np.array_equal(stream, expect) and stream[split] == BOS_ID
    assert split == sum(docs[i].size for i in a)
    assert stream_bytes(ds.byte_table, stream) == stream_bytes(ds.byte_table, tokens)  # each doc keeps its bytes
    again = probe_halves(tokens, BOS_ID, sources, k, False)
    assert again[1].tolist() == a.tolist()  # seeded: the same split every time
    swapped = probe_halves(tokens, BOS_ID, sources, k, True)
    assert swapped[1].tolist() == b.tolist() and swapped[2].tolist() == a.tolist()


def test_different_splits_draw_different_documents(labelled_dataset):
    ds = Dataset.open(labelled_dataset)
    tokens = np.asarray(ds.val_tokens)
    drawn = {tuple(probe_halves(tokens, BOS_ID, ds.val_doc_sources, k, False)[1]) for k in (1, 2, 3, 4)}
    assert len(drawn) >= 3


def test_a_run_records_its_halves_and_train_slice_matches_the_budget(labelled_dataset, tmp_path, monkeypatch):
    monkeypatch.setenv("GOLF_CACHE", str(tmp_path / "cache"))
    common = [f"data.path={labelled_dataset}", "train.max_steps=3", "ttt.epochs=1", "ttt.probe_split=2",
              "train.checkpoint=false", "data.max_val_docs=6"]  # 2 addresses + 4 chapters: the shard covers A
    pre = run(build_config(preset="tiny", overrides=common + ["ttt.strategy=prequant_val", "ttt.allow_illegal=true"]),
              tmp_path / "pre")
    ctl = run(build_config(preset="tiny", overrides=common + ["ttt.strategy=train_slice", "ttt.slice_tokens=0"]),
              tmp_path / "slice")
    halves = pre["ttt"]["probe_halves"]
    assert halves["split"] == 2 and not halves["swap"]
    assert sorted(halves["docs_a"] + halves["docs_b"]) == list(range(6))
    assert halves["tokens_a"] + halves["tokens_b"] == pre["data"]["val_tokens"] - 1
    assert halves["bytes_a"] + halves["bytes_b"] == pre["data"]["val_bytes"]
    assert set(halves["sources_a"]) == set(halves["sources_b"]) == {"lincoln", "moby_dick"}
    assert ctl["ttt"]["probe_halves"] == halves  # the control sees the same halves
    assert ctl["ttt"]["steps"] == pre["ttt"]["steps"] and ctl["ttt"]["steps"] > 0  # budget-matched
    seq = pre["config"]["train"]["seq_len"]
    assert ctl["ttt"]["trained_tokens"] == -(-halves["tokens_a"] // seq) * seq
    assert pre["ttt"]["trained_tokens"] == halves["tokens_a"]
