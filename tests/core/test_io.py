"""Atomic writes: the result appears whole or not at all, with the permissions of any new file."""

import os

import pytest

from erasekit._io import _umask, atomic_dir, atomic_path, write_text


def test_atomic_file_is_whole_or_absent_and_readable_like_any_new_file(tmp_path):
    target = tmp_path / "sub" / "out.txt"
    write_text(target, "done")
    assert target.read_text() == "done"
    assert target.stat().st_mode & 0o777 == 0o666 & ~_umask()  # not mkstemp's owner-only 0o600
    with pytest.raises(RuntimeError), atomic_path(tmp_path / "never.txt") as tmp:
        tmp.write_text("half")
        raise RuntimeError("interrupted")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sub"]  # no result, no temporary file


def test_atomic_dir_is_whole_or_absent_and_refuses_to_clobber(tmp_path):
    with atomic_dir(tmp_path / "world") as tmp:
        (tmp / "a.txt").write_text("a")
    assert (tmp_path / "world" / "a.txt").read_text() == "a"
    assert (tmp_path / "world").stat().st_mode & 0o777 == 0o777 & ~_umask()
    with pytest.raises(FileExistsError, match="--overwrite"), atomic_dir(tmp_path / "world"):
        pass
    with pytest.raises(RuntimeError), atomic_dir(tmp_path / "other") as tmp:
        (tmp / "b.txt").write_text("b")
        raise RuntimeError("interrupted")
    assert sorted(os.listdir(tmp_path)) == ["world"]
