"""Where golf keeps datasets, and when a dataset directory there is complete.

Shared by both fetchers (`golf.data.sources`, the offline default corpus, and `golf.data.fineweb`, the
challenge's data from the hub) and by study datasets, which build under the same root: `$GOLF_DATA`
(default `~/.cache/golf`) holds `downloads/`, `corpora/` and `datasets/<name>/`.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from golf.errors import GolfError


def data_root(root: str | os.PathLike | None = None) -> Path:
    """The data root: `root` if given, else `$GOLF_DATA`, else `~/.cache/golf`."""
    if root is not None:
        return Path(root).expanduser()
    env = os.environ.get("GOLF_DATA")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "golf"


def writable_root(root: Path) -> Path:
    """`root`, created if needed, after checking that golf can write there: a data root that is a file or
    read-only fails here with one line naming it, not deep inside a download or a shard writer."""
    where = f"data root {root} (--root, $GOLF_DATA or ~/.cache/golf)"
    if root.exists() and not root.is_dir():
        raise GolfError(f"{where}: exists and is not a directory")
    try:
        root.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=root):
            pass
    except OSError as e:
        raise GolfError(f"{where}: not writable ({e.strerror or e})") from None
    return root


def load_complete_manifest(directory: Path) -> dict | None:
    """The manifest of a complete dataset directory, or None when anything is missing or malformed.

    "Complete" means: manifest.json parses, has the contract's keys, and the tokenizer file and the number of
    shards it lists are present. A dataset written by golf is renamed into place only when whole, so this
    cheap check (no shard is read) is what lets a second fetch skip all work.
    """
    path = directory / "manifest.json"
    if not path.is_file():
        return None
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
        name = manifest["name"]
        tokenizer_file = manifest["tokenizer"]["file"]
        counts = {split: int(manifest[split]["shards"]) for split in ("train", "val")}
        int(manifest["vocab_size"])
        int(manifest["val"]["bytes"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if not (directory / tokenizer_file).is_file():
        return None
    for split, count in counts.items():
        for index in range(count):
            if not (directory / f"{name}_{split}_{index:06d}.bin").is_file():
                return None
    return manifest
