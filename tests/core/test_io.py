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


def test_written_data_reaches_the_disk_before_its_name_does(tmp_path, monkeypatch):
    """A rename can be persisted before the data it names: each file (and a folder's files) is fsynced before the
    rename, and the folder holding the new name after it."""
    from erasekit import _io

    events = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
        real_fsync(fd)

    def replace(src, dst):
        events.append(("replace", str(dst)))
        real_replace(src, dst)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    _io.write_text(tmp_path / "a.txt", "x")
    assert events[0][0] == "fsync" and os.path.basename(events[0][1]).startswith(".a.txt.")  # the temporary
    assert events[1] == ("replace", str(tmp_path / "a.txt")) and events[2] == ("fsync", str(tmp_path))
    events.clear()
    with _io.atomic_dir(tmp_path / "d") as tmp:
        (tmp / "f.bin").write_bytes(b"1")
    first_replace = next(i for i, (kind, _) in enumerate(events) if kind == "replace")
    assert any(p.endswith("f.bin") for _, p in events[:first_replace])
    assert events[-1] == ("fsync", str(tmp_path))


def test_a_writer_that_replaces_the_temporary_file_still_gives_a_readable_result(tmp_path):
    """safetensors' save_file writes a new owner-only file over the temporary one; the result is still readable
    like any new file (a patch shared with another user or a model server must not be owner-only)."""
    import torch
    from safetensors.torch import save_file

    target = tmp_path / "patch.safetensors"
    with atomic_path(target) as tmp:
        save_file({"x": torch.zeros(2)}, str(tmp))
    assert target.stat().st_mode & 0o777 == 0o666 & ~_umask()


def test_save_safetensors_writes_the_same_bytes_for_the_same_tensors_and_metadata(tmp_path):
    """safetensors orders metadata entries by a per-process hash; erasekit's files must not depend on it."""
    import subprocess
    import sys

    from safetensors import safe_open

    code = (
        "import sys, torch; from erasekit._io import save_safetensors; "
        "save_safetensors({'b': torch.arange(3.0), 'a': torch.ones(2, 2)}, sys.argv[1], "
        "{'format': 'pt', 'zeta': 'é/1', 'alpha': '{\"x\": [1, 2]}', 'mid': 'm'})"
    )
    files = [tmp_path / f"{i}.safetensors" for i in range(4)]
    for f in files:  # separate processes: each has its own hash seed
        subprocess.run([sys.executable, "-c", code, str(f)], check=True)
    assert len({f.read_bytes() for f in files}) == 1
    with safe_open(str(files[0]), framework="pt") as f:
        assert f.metadata() == {"format": "pt", "zeta": "é/1", "alpha": '{"x": [1, 2]}', "mid": "m"}
        assert f.get_tensor("a").tolist() == [[1.0, 1.0], [1.0, 1.0]] and f.get_tensor("b").tolist() == [0, 1, 2]
