"""Atomic writes: the final file appears whole, with ordinary permissions, and a failure leaves nothing."""

import os
import stat

import pytest

from golf.io import atomic_dir, write_json, write_text


def _mode(path):
    return stat.S_IMODE(os.stat(path).st_mode)


def test_written_files_and_dirs_get_umask_permissions_not_tempfile_ones(tmp_path):
    old = os.umask(0o022)
    try:
        write_json(tmp_path / "r.json", {"a": 1})
        with atomic_dir(tmp_path / "d") as d:
            (d / "x").write_text("x")
    finally:
        os.umask(old)
    assert _mode(tmp_path / "r.json") == 0o644  # mkstemp alone would leave 0600
    assert _mode(tmp_path / "d") == 0o755  # mkdtemp alone would leave 0700
    assert (tmp_path / "r.json").read_text() == '{\n  "a": 1\n}\n'


def test_failure_leaves_neither_final_nor_temporary_file(tmp_path):
    class Boom(Exception):
        pass

    write_text(tmp_path / "keep.txt", "old")
    with pytest.raises(Boom), atomic_dir(tmp_path / "d") as d:
        (d / "x").write_text("half")
        raise Boom
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.txt"]
