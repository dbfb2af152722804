"""Atomic file output: every file erasekit writes goes to a temporary sibling first and is renamed into place.

A temporary sibling is named ``.<name>.<owner>.<random>.tmp``, where the owner tags this machine and process. A
process killed before its rename (SIGKILL, power loss) leaves its temporary behind; the next write of the same path
on the same machine deletes such leftovers of processes that no longer run (:func:`remove_stale_temps`), so reruns
neither trip on them nor pile them up. The output path itself only ever holds a complete file or folder.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import re
import shutil
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from ._killpoints import kill_point


@functools.cache
def _umask() -> int:
    """The process's umask, read once (reading it means setting it and putting it back, which another thread
    creating a file at that moment would see)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@functools.cache
def _host_tag() -> str:
    return hashlib.blake2b(socket.gethostname().encode(), digest_size=4).hexdigest()


def _owner() -> str:
    """This machine and process, as temporary names record them (read per call: a forked child is another owner)."""
    return f"h{_host_tag()}p{os.getpid()}"


_OWNER = re.compile(r"h([0-9a-f]{8})p([0-9]+)")


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def remove_stale_temps(path: str | os.PathLike) -> list[Path]:
    """Delete the temporary siblings of ``path`` left by processes of this machine that no longer run.

    Temporaries of live processes, of other machines (a shared file system) and names this module did not make are
    left alone. Returns what was deleted.
    """
    path = Path(path)
    prefix = f".{path.name}."
    removed = []
    try:
        entries = list(path.parent.iterdir())
    except OSError:
        return removed
    for entry in entries:
        name = entry.name
        if not (name.startswith(prefix) and name.endswith(".tmp")):
            continue
        owner = _OWNER.fullmatch(name[len(prefix) :].split(".", 1)[0])
        if owner is None or owner.group(1) != _host_tag() or _alive(int(owner.group(2))):
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)
        removed.append(entry)
    return removed


def _fsync(path: Path) -> None:
    """Flush a file, or a folder's entries, to the disk: a rename can reach the disk before the data it names, and
    after a power cut the new name would point at an empty file. Filesystems that cannot sync a folder skip it."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _fsync_tree(root: Path) -> None:
    for folder, _, files in os.walk(root):
        for name in files:
            _fsync(Path(folder) / name)
        _fsync(Path(folder))


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success it is renamed onto ``path``, on error it is deleted.

    Example:
        >>> with atomic_path("out.png") as tmp:
        ...     image.save(tmp, format="PNG")
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{_owner()}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        # mkstemp makes it owner-only, and a writer may replace the file with its own (safetensors' save_file does):
        # the result should read like any new file
        os.chmod(tmp_path, 0o666 & ~_umask())
        _fsync(tmp_path)
        kill_point(f"write:{path.name}")
        os.replace(tmp_path, path)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise
    _fsync(path.parent)  # the rename itself
    kill_point(f"written:{path.name}")


def write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` to ``path`` atomically and return the path."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def write_json(path: str | os.PathLike, obj: Any) -> Path:
    """Write ``obj`` as indented JSON to ``path`` atomically and return the path."""
    return write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")


def save_safetensors(
    tensors: dict[str, torch.Tensor], path: str | os.PathLike, metadata: dict[str, str] | None = None
):
    """Save ``tensors`` to a ``.safetensors`` file atomically; ``metadata`` values must be strings. The same tensors
    and metadata give the same bytes (:func:`_sort_metadata`)."""
    from safetensors.torch import save_file

    tensors = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=metadata)
        _sort_metadata(tmp)
    return Path(path)


def _sort_metadata(path: Path) -> None:
    """Put the ``__metadata__`` entries of a safetensors header in key order, in place. safetensors writes them in a
    hash map's order, which changes from one process to the next, so two saves of one patch (or world file) with
    several metadata entries would differ in bytes and in sha256. Only the header's order changes: the entries, the
    tensors and their offsets stay as written."""
    with open(path, "r+b") as f:
        size = int.from_bytes(f.read(8), "little")
        raw = f.read(size)
        header = json.loads(raw)
        meta = header.get("__metadata__")
        if not meta or list(meta) == sorted(meta):
            return
        header["__metadata__"] = dict(sorted(meta.items()))
        text = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
        if len(text) > size:  # not expected (the same entries, reordered); keep the file as safetensors wrote it
            return
        f.seek(8)
        f.write(text.ljust(size, b" "))  # safetensors pads its header with spaces to its recorded length


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary folder next to ``path``; on success it replaces ``path``, on error it is deleted.

    Raises:
        FileExistsError: ``path`` exists and is not empty, and ``overwrite`` is False.
    """
    path = Path(path)
    if path.exists() and any(path.iterdir()) and not overwrite:
        raise FileExistsError(f"{path} exists and is not empty; choose another folder or pass --overwrite.")
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(path)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.{_owner()}.", suffix=".tmp", dir=path.parent))
    os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes it owner-only
    try:
        yield tmp
        _fsync_tree(tmp)
        kill_point(f"write:{path.name}")
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = None
    if path.exists():
        old = path.with_name(f".{path.name}.{_owner()}.old.tmp")  # swept like a temporary if a kill strands it
        shutil.rmtree(old, ignore_errors=True)
        os.replace(path, old)
        kill_point(f"swap:{path.name}")
    os.replace(tmp, path)
    _fsync(path.parent)
    kill_point(f"written:{path.name}")
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
