"""Checking, before any work, that nothing onnxsmith writes lands on what it reads or leaves its
output folder, and that every write can land at all.

A command lists the files it will read (the model, its external data files, calibration
data, recipe, cost table) and the paths it will write (artifact, its data file, report,
dump folder, saved recipe, costs, summaries), each with a few words saying what it is.
:func:`refuse_overlap` compares them by resolved path (every symbolic link followed) and,
where both exist, by device and inode (what ``os.path.samefile`` compares: hard links);
:func:`refuse_escape` keeps every write inside the output folder it was given;
:func:`refuse_unwritable` (which :func:`refuse_overlap` ends with) finds a write that would
fail after the work (a folder where a file goes, a parent that is a file, a name too long,
a place such as ``/proc`` where nothing can be created) while nothing has been written yet.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable
from pathlib import Path

from onnxsmith.errors import InputError

__all__ = ["Read", "Write", "refuse_escape", "refuse_overlap", "refuse_unwritable"]

Read = tuple[str, "str | os.PathLike[str]"]  # (what it is, e.g. "the calibration data", its path)
Write = tuple[str, "str | os.PathLike[str]", str]  # (what it is, its path, how to move it: "choose another -o path")

NEVER_MODIFIES = "onnxsmith never modifies its input"


def refuse_overlap(reads: Iterable[Read], writes: Iterable[Write], *, folders: Iterable[Write] = ()) -> None:
    """Raise InputError when a path of ``writes`` is a file of ``reads`` or another write.

    A folder among ``reads`` stands for the files directly in it (a calibration folder);
    ``folders`` are folders written into (``--dump-dir``): none may hold a file read.
    Then every write must be possible (:func:`refuse_unwritable`).
    """
    writes, folders = list(writes), list(folders)
    read_at: dict[object, str] = {}
    real_reads: list[tuple[str, str]] = []
    seen: set[Path] = set()
    for what, path in reads:
        if Path(path) in seen:  # a batch's entries share calibration folders and cost tables
            continue
        seen.add(Path(path))
        for file in _files(Path(path)):
            label = f"{what} {file}" if file == Path(path) else f"{what} file {file}"
            for key in _identity(file):
                read_at.setdefault(key, label)
            real_reads.append((os.path.realpath(file), label))
    written_at: dict[object, str] = {}
    for what, path, fix in writes:
        label, keys = f"{what} {path}", _identity(Path(path))
        for key in keys:
            if key in read_at:
                raise InputError(f"{label} is {read_at[key]}", f"{fix}; {NEVER_MODIFIES}")
            if key in written_at and written_at[key] != label:
                raise InputError(f"{label} and {written_at[key]} are the same file", fix)
        written_at.update(dict.fromkeys(keys, label))
    for what, folder, fix in folders:
        real = os.path.realpath(folder)
        for file, label in real_reads:
            if os.path.commonpath([real, file]) == real:
                raise InputError(f"{what} {folder} holds {label}", f"{fix}; {NEVER_MODIFIES}")
    refuse_unwritable(writes, folders=folders)


def refuse_unwritable(writes: Iterable[Write], *, folders: Iterable[Write] = ()) -> None:
    """Raise InputError when a file of ``writes`` or a folder of ``folders`` could not be written.

    Checked without writing anything that stays: the path is not a folder (a file write) or
    a file (a folder write), no name in it is longer than the file system allows, its
    nearest existing folder above is a folder, and a probe file can be created (and is
    removed) there, which finds read-only places and ``/proc`` alike, whoever runs it.
    """
    probed: set[Path] = set()
    for (what, path, fix), is_folder in [*((w, False) for w in writes), *((f, True) for f in folders)]:
        path = Path(os.path.abspath(path))
        label = f"{what} {path}"
        if is_folder and path.exists() and not path.is_dir():
            raise InputError(f"{label} is a file, not a folder", fix)
        if not is_folder and path.is_dir():
            raise InputError(f"{label} is an existing folder, not a file", fix)
        existing = next(p for p in (path if is_folder else path.parent, *path.parents) if os.path.lexists(p))
        if not existing.is_dir():
            raise InputError(f"{label} cannot be written: {existing} is a file, not a folder", fix)
        limit = _name_max(existing)
        for part in path.parts[1:]:
            if len(os.fsencode(part)) > limit:
                raise InputError(f"{what} has a name too long for the file system ({len(os.fsencode(part))} bytes, at most {limit}): "
                                 f"{part[:40]}...", fix)
        if existing not in probed:
            _probe(existing, label, fix)
            probed.add(existing)


def _name_max(folder: Path) -> int:
    try:
        return os.pathconf(folder, "PC_NAME_MAX")
    except (OSError, ValueError):
        return 255


def _probe(folder: Path, label: str, fix: str) -> None:
    """Create and remove one temporary file in ``folder``: what the atomic writes will do there."""
    try:
        fd, name = tempfile.mkstemp(prefix=".onnxsmith-probe-", dir=folder)
    except OSError as e:
        raise InputError(f"{label} cannot be written: nothing can be created in {folder} ({e.strerror})", fix) from None
    os.close(fd)
    os.unlink(name)


def refuse_escape(root: str | os.PathLike[str], writes: Iterable[Read]) -> None:
    """Raise InputError when a path of ``writes`` resolves outside ``root`` (a symbolic link in it points elsewhere).

    ``root`` itself may be a link: its target is the folder the user chose."""
    real_root = os.path.realpath(root)
    for what, path in writes:
        real = os.path.realpath(path)
        if os.path.commonpath([real_root, real]) != real_root:
            raise InputError(f"{what} {path} would be written outside {root}, to {real}, through a symbolic link",
                             f"remove the link from {root}, or choose another -o folder")


def _files(path: Path) -> list[Path]:
    if path.is_dir():
        return sorted(p for p in path.iterdir() if p.is_file())
    return [path]


def _identity(path: Path) -> list[object]:
    """The keys two names of one file share: the resolved path, and the inode where it exists."""
    keys: list[object] = [os.path.realpath(path)]
    try:
        st = os.stat(path)
    except (OSError, ValueError):  # missing, a dangling link, a name the OS refuses: the path alone
        return keys
    return [*keys, (st.st_dev, st.st_ino)]
