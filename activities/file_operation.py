"""The ``file_operation`` action: read, write and manage files in the user's own folder.

Every path is relative to ``FILES_ROOT/<user_id>/``. Absolute paths and ``..`` components are
refused, and so is any path (or copy/move destination) that leads outside the folder once
every symlink is followed; a symlink that stays inside the folder works like its target.
Like the shell, ``delete`` and ``move`` act on a symlink itself, the other operations on what
it points to. Results name paths relative to the folder, never the server's absolute path.
"""

from __future__ import annotations

import asyncio
import errno
import os
import shutil
import stat
from pathlib import Path, PurePosixPath
from typing import IO, Any

from activities._action import ActionRun
from activities._failure import ActionFailure
from schema.actions import FileOperationConfig

# What read may load (memory); a result over the runtime's limit is cut (result_truncated).
MAX_READ_BYTES = 512 * 1024
# The config caps content at 10 million characters; UTF-8 may turn that into 40 MB.
MAX_WRITE_BYTES = 10 * 1024 * 1024
# The largest file an append may grow or a copy may duplicate.
MAX_FILE_BYTES = 50 * 1024 * 1024
MAX_LIST_ENTRIES = 1000

# Opening without following a final symlink closes the gap between checking a path and using
# it; non-blocking opens keep a FIFO planted in the folder from hanging the worker.
_NO_FOLLOW = getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
_ERRORS = {
    errno.ENOENT: ("FileNotFound", False),
    errno.EISDIR: ("IsADirectory", False),
    errno.ENOTDIR: ("NotADirectory", False),
    errno.ENOTEMPTY: ("DirectoryNotEmpty", False),
    errno.EACCES: ("PermissionDenied", False),
    errno.EPERM: ("PermissionDenied", False),
    errno.ELOOP: ("InvalidPath", False),
    errno.ENAMETOOLONG: ("InvalidPath", False),
    errno.EINVAL: ("InvalidPath", False),
    errno.EFBIG: ("FileTooLarge", False),
    errno.ENXIO: ("UnsupportedFileType", False),  # a FIFO or socket opened for writing
    errno.ENOSPC: ("DiskFull", True),
    errno.EDQUOT: ("DiskFull", True),
}


class FileProblem(ActionFailure):
    """A classified reason the operation cannot be done (not retryable unless it says so)."""

    def __init__(self, error_type: str, message: str, *, retryable: bool = False) -> None:
        super().__init__(error_type, message, retryable=retryable)


async def operate(run: ActionRun, config: FileOperationConfig) -> dict[str, Any]:
    """Run one file operation inside the user's folder and return its result."""
    target = f" -> {config.destination}" if config.destination else ""
    run.log(f"{config.operation} {config.path}{target}")
    folder = run.deps.settings.files_root / str(run.input.user_id)
    return await asyncio.to_thread(_operate, folder, config)


def _operate(folder_path: Path, config: FileOperationConfig) -> dict[str, Any]:
    try:
        folder = _Folder(folder_path)
    except OSError as error:
        message = f"cannot create your folder: {error.strerror}"
        raise FileProblem("FileSystemError", message, retryable=True) from None
    try:
        match config.operation:
            case "read":
                return _read(folder, config.path)
            case "write" | "append":
                return _write(folder, config.path, config.content or "", config.operation)
            case "copy":
                return _copy(folder, config.path, config.destination or "")
            case "move":
                return _move(folder, config.path, config.destination or "")
            case "delete":
                return _delete(folder, config.path)
            case "list":
                return _list(folder, config.path)
            case "exists":
                return _exists(folder, config.path)
    except OSError as error:
        raise folder.problem(error, config.path) from None


class _Folder:
    """One user's folder, and the only way a configured path becomes a real one."""

    def __init__(self, path: Path) -> None:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.root = path.resolve()

    def resolve(self, raw: str) -> Path:
        """``raw`` with every symlink followed; refused unless it stays inside the folder."""
        try:
            real = (self.root / _relative(raw)).resolve()
        except RuntimeError:  # Python 3.11 reports a symlink loop this way
            raise FileProblem("InvalidPath", f"symlink loop in {raw}") from None
        if not real.is_relative_to(self.root):
            raise FileProblem("PathNotAllowed", f"{raw} leads outside your folder")
        return real

    def entry(self, raw: str) -> Path:
        """``raw`` itself, a symlink left unfollowed, in its parent's real directory."""
        relative = _relative(raw)
        if not relative.parts:
            raise FileProblem("PathNotAllowed", "the operation cannot act on your folder itself")
        # A symlink must lead inside even when the operation acts on the link.
        self.resolve(raw)
        parent = self.resolve(relative.parent.as_posix())
        return parent / relative.name

    def show(self, path: Path | str) -> str:
        return Path(path).relative_to(self.root).as_posix()

    def problem(self, error: OSError, raw: str) -> FileProblem:
        """``error`` classified, naming paths relative to the folder."""
        error_type, retryable = _ERRORS.get(error.errno or 0, ("FileSystemError", True))
        shown = raw
        if isinstance(error.filename, str) and Path(error.filename).is_relative_to(self.root):
            shown = self.show(error.filename)
        return FileProblem(error_type, f"{error.strerror}: {shown}", retryable=retryable)


def _relative(raw: str) -> Path:
    if "\x00" in raw:
        raise FileProblem("InvalidPath", "paths cannot contain NUL characters")
    pure = PurePosixPath(raw)
    if pure.is_absolute():
        raise FileProblem("PathNotAllowed", f"{raw} is absolute; paths are relative to your folder")
    if ".." in pure.parts:
        raise FileProblem("PathNotAllowed", f"{raw} contains '..'")
    return Path(*pure.parts)


def _open(path: Path, flags: int, shown: str) -> IO[bytes]:
    """``path`` opened without following a symlink, refused unless a regular file."""
    descriptor = os.open(path, flags | _NO_FOLLOW, 0o644)
    mode = os.fstat(descriptor).st_mode
    if not stat.S_ISREG(mode):
        os.close(descriptor)
        if stat.S_ISDIR(mode):
            raise FileProblem("IsADirectory", f"{shown} is a directory")
        raise FileProblem("UnsupportedFileType", f"{shown} is not a regular file")
    return os.fdopen(descriptor, "wb" if flags & (os.O_WRONLY | os.O_RDWR) else "rb")


def _make_parent(folder: _Folder, path: Path) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        shown = folder.show(path.parent)
        raise FileProblem("NotADirectory", f"{shown} (or one of its parents) is a file") from None


def _too_large(what: str, size: int, limit: int) -> FileProblem:
    return FileProblem("FileTooLarge", f"{what} is {size} bytes; the limit is {limit}")


def _read(folder: _Folder, raw: str) -> dict[str, Any]:
    real = folder.resolve(raw)
    with _open(real, os.O_RDONLY, raw) as handle:
        size = os.fstat(handle.fileno()).st_size
        if size > MAX_READ_BYTES:
            raise _too_large(raw, size, MAX_READ_BYTES)
        data = handle.read(MAX_READ_BYTES + 1)
    if len(data) > MAX_READ_BYTES:
        raise _too_large(raw, len(data), MAX_READ_BYTES)
    try:
        text, binary = data.decode("utf-8"), b"\x00" in data
    except UnicodeDecodeError:
        text, binary = data.decode("utf-8", errors="replace"), True
    # PostgreSQL's JSONB, where results are kept, cannot hold NUL characters.
    content = text.replace("\x00", "\ufffd")
    return {"path": folder.show(real), "content": content, "size": len(data), "binary": binary}


def _write(folder: _Folder, raw: str, content: str, operation: str) -> dict[str, Any]:
    data = content.encode("utf-8")
    if len(data) > MAX_WRITE_BYTES:
        raise _too_large("the content", len(data), MAX_WRITE_BYTES)
    real = folder.resolve(raw)
    _make_parent(folder, real)
    append = operation == "append"
    flags = os.O_WRONLY | os.O_CREAT | (os.O_APPEND if append else 0)
    with _open(real, flags, raw) as handle:
        if append:
            grown = os.fstat(handle.fileno()).st_size + len(data)
            if grown > MAX_FILE_BYTES:
                raise _too_large(f"{raw} after appending", grown, MAX_FILE_BYTES)
        else:
            handle.truncate(0)
        handle.write(data)
        handle.flush()
        size = os.fstat(handle.fileno()).st_size
    return {"path": folder.show(real), "size": size}


def _copy(folder: _Folder, raw: str, raw_destination: str) -> dict[str, Any]:
    source = folder.resolve(raw)
    destination = folder.resolve(raw_destination)
    with _open(source, os.O_RDONLY, raw) as reader:
        status = os.fstat(reader.fileno())
        if status.st_size > MAX_FILE_BYTES:
            raise _too_large(raw, status.st_size, MAX_FILE_BYTES)
        try:
            existing = os.stat(destination)
        except (FileNotFoundError, NotADirectoryError):
            existing = None
        if existing is not None and os.path.samestat(existing, status):
            raise FileProblem("InvalidPath", f"{raw} and {raw_destination} are the same file")
        _make_parent(folder, destination)
        with _open(destination, os.O_WRONLY | os.O_CREAT, raw_destination) as writer:
            writer.truncate(0)
            shutil.copyfileobj(reader, writer)
    return {"path": folder.show(source), "destination": folder.show(destination)}


def _move(folder: _Folder, raw: str, raw_destination: str) -> dict[str, Any]:
    source = folder.entry(raw)
    destination = folder.resolve(raw_destination)
    if not os.path.lexists(source):
        raise FileProblem("FileNotFound", f"no such file or directory: {raw}")
    if destination.is_dir():
        raise FileProblem(
            "IsADirectory", f"{raw_destination} is a directory; give the full target path"
        )
    if not source.is_symlink() and destination.is_relative_to(source):
        raise FileProblem("InvalidPath", f"cannot move {raw} into itself")
    _make_parent(folder, destination)
    os.replace(source, destination)
    return {"path": folder.show(source), "destination": folder.show(destination)}


def _delete(folder: _Folder, raw: str) -> dict[str, Any]:
    entry = folder.entry(raw)
    if stat.S_ISDIR(os.lstat(entry).st_mode):
        os.rmdir(entry)  # only an empty directory: nothing disappears by accident
    else:
        os.unlink(entry)
    return {"path": folder.show(entry), "deleted": True}


def _list(folder: _Folder, raw: str) -> dict[str, Any]:
    real = folder.resolve(raw)
    with os.scandir(real) as scan:
        found = sorted(scan, key=lambda entry: entry.name)
    entries: list[dict[str, Any]] = []
    for entry in found:
        described = _describe(folder, entry)
        if described is not None:
            entries.append(described)
        if len(entries) > MAX_LIST_ENTRIES:
            break
    return {
        "path": folder.show(real),
        "entries": entries[:MAX_LIST_ENTRIES],
        "truncated": len(entries) > MAX_LIST_ENTRIES,
    }


def _describe(folder: _Folder, entry: os.DirEntry[str]) -> dict[str, Any] | None:
    """A listing line; symlinks leading outside, dangling ones and special files are left out."""
    try:
        if entry.is_symlink():
            target = Path(entry.path).resolve()
            if not target.is_relative_to(folder.root):
                return None
            status = os.stat(target)
        else:
            status = entry.stat(follow_symlinks=False)
    except (OSError, RuntimeError):
        return None
    if stat.S_ISDIR(status.st_mode):
        return {"name": entry.name, "type": "dir", "size": None}
    if stat.S_ISREG(status.st_mode):
        return {"name": entry.name, "type": "file", "size": status.st_size}
    return None


def _exists(folder: _Folder, raw: str) -> dict[str, Any]:
    real = folder.resolve(raw)
    try:
        mode = os.stat(real).st_mode
    except (FileNotFoundError, NotADirectoryError):
        return {"path": folder.show(real), "exists": False, "type": None}
    kind = "dir" if stat.S_ISDIR(mode) else "file" if stat.S_ISREG(mode) else "other"
    return {"path": folder.show(real), "exists": True, "type": kind}
