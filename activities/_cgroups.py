"""A cgroup per ``run_code`` program: one memory and process limit for its whole tree.

``create`` makes the run's cgroup beside the worker, where the kernel and the worker's
permissions allow:

- cgroup v2 (the unified hierarchy, with the memory controller): a child of the worker's
  own cgroup, with ``memory.max``, ``memory.swap.max`` 0, ``memory.oom.group`` 1 and
  ``pids.max``. The worker's cgroup must be delegated to it: a cgroup namespace's root (a
  container's), a cgroup marked delegated (systemd's ``Delegate=``), or one owned by the
  worker's own non-root user. Its controllers are enabled there once, the worker's
  processes first moved into a ``cronpilot-worker`` leaf (the kernel allows no process in
  a cgroup that gives controllers to its children).
- cgroup v1: a child of the worker's memory cgroup (``memory.limit_in_bytes``, and
  ``memory.memsw.limit_in_bytes`` where swap is accounted) and of its pids cgroup.

The program's first process joins it before anything else (``_sandbox``), so every process
the program starts is in it, and so are the pages of its tmpfs scratch. ``remove`` kills
whatever is left in it and removes it. Where no cgroup can be made, ``create`` says why
and the run falls back to per-process limits.

Killing never reaches a process outside the cgroup, even one that took the pid of a member
that has just ended: the kernel kills the members itself (``cgroup.kill``, cgroup v2 on
Linux 5.14 and later); elsewhere each member is signalled through a pidfd opened before its
membership is read again (Linux 5.3 and later; before that, no member is signalled here and
the run's PID namespace, which ends with the program, ends them).
"""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

PROC_CGROUP = Path("/proc/self/cgroup")
MOUNTINFO = Path("/proc/self/mountinfo")
PREFIX = "cronpilot-code-"
WORKER_LEAF = "cronpilot-worker"
DELEGATE_XATTRS = ("trusted.delegate", "user.delegate")
# How long removal waits for killed processes to go (freeing much memory takes a moment).
REMOVE_SECONDS = 10.0
# The sweep removes a run cgroup with no run folder beside it only once older than this: a
# run's cgroup is joined within milliseconds of its creation.
LEFTOVER_SECONDS = 60.0


@dataclass(frozen=True)
class Hierarchy:
    """Where a controller lives: the worker's cgroup directory in that hierarchy."""

    version: int
    directory: Path


@dataclass(frozen=True)
class RunGroup:
    """A run's cgroup directories (one on v2; memory and pids on v1) and what they limit."""

    version: int
    directories: tuple[Path, ...]
    memory: bool
    pids: bool

    @property
    def procs(self) -> tuple[str, ...]:
        """The files a process writes its pid to, to join."""
        return tuple(str(directory / "cgroup.procs") for directory in self.directories)

    def describe(self) -> str:
        limits = [name for name, held in (("memory", self.memory), ("pids", self.pids)) if held]
        return f"cgroup v{self.version} {'+'.join(limits)}"


def create(name: str, memory_bytes: int, tasks: int) -> tuple[RunGroup | None, str]:
    """The run's cgroup, or None; and why it is missing or partial (else empty)."""
    parent, reason = _v2_parent()
    if parent is not None:
        return _create_v2(parent / name, memory_bytes, tasks)
    group, why = _create_v1(name, memory_bytes, tasks)
    return group, f"{reason}; {why}" if why else ""


def _create_v1(name: str, memory_bytes: int, tasks: int) -> tuple[RunGroup | None, str]:
    made: dict[str, Path] = {}
    why = []
    for kind, settings in (
        ("memory", [("memory.limit_in_bytes", memory_bytes)]),
        ("pids", [("pids.max", tasks)]),
    ):
        parent = _v1_directory(kind)
        if parent is None:
            why.append(f"no writable cgroup v1 {kind} hierarchy")
            continue
        try:
            made[kind] = _make(parent / name, settings)
        except OSError as error:
            why.append(f"cgroup v1 {kind}: {error.strerror}")
    if "memory" in made:
        # Only where swap is accounted; it may not be below the memory limit.
        with contextlib.suppress(OSError):
            _write(made["memory"] / "memory.memsw.limit_in_bytes", memory_bytes)
    if not made:
        return None, "; ".join(why)
    return RunGroup(1, tuple(made.values()), "memory" in made, "pids" in made), "; ".join(why)


def oom_kills(group: RunGroup) -> int:
    """How many of the run's processes the kernel's OOM killer ended."""
    for directory in group.directories:
        for name in ("memory.events", "memory.oom_control"):
            with contextlib.suppress(OSError):
                for line in (directory / name).read_text().splitlines():
                    key, _, value = line.partition(" ")
                    if key == "oom_kill":
                        return int(value)
    return 0


def remove(group: RunGroup) -> bool:
    """Kill every process left in the run's cgroup and remove it; False if it stays."""
    deadline = time.monotonic() + REMOVE_SECONDS
    while _kill_members(group.directories) and time.monotonic() < deadline:
        time.sleep(0.02)
    removed = True
    for directory in group.directories:
        removed &= _rmdir(directory, deadline)
    return removed


def remove_leftovers(alive: Iterable[str], dead: Iterable[str]) -> list[str]:
    """Remove the run cgroups killed workers left: those of ``dead`` runs, whatever is in
    them killed first, and any other but those of ``alive`` runs once empty and old enough
    (another worker's run, on another temporary directory, may have just made its own)."""
    keep, gone = set(alive), set(dead)
    removed = []
    for parent in (_v2_parent()[0], _v1_directory("memory"), _v1_directory("pids")):
        if parent is None:
            continue
        with contextlib.suppress(OSError):
            for entry in parent.iterdir():
                if not entry.name.startswith(PREFIX) or entry.name in keep:
                    continue
                if entry.name in gone:
                    _kill_members([entry])
                    if _rmdir(entry, time.monotonic() + REMOVE_SECONDS):
                        removed.append(str(entry))
                    continue
                with contextlib.suppress(OSError):
                    if time.time() - entry.stat().st_mtime > LEFTOVER_SECONDS:
                        entry.rmdir()  # refused while a process is in it
                        removed.append(str(entry))
    return removed


def _create_v2(directory: Path, memory_bytes: int, tasks: int) -> tuple[RunGroup | None, str]:
    settings = [("memory.max", memory_bytes), ("pids.max", tasks)]
    try:
        _make(directory, settings)
    except OSError as error:
        return None, f"cgroup v2: {directory.parent}: {error.strerror}"
    for name, value in (("memory.swap.max", 0), ("memory.oom.group", 1)):
        with contextlib.suppress(OSError):
            _write(directory / name, value)
    return RunGroup(2, (directory,), memory=True, pids=True), ""


def _v2_parent() -> tuple[Path | None, str]:
    """The v2 cgroup runs are made in, its memory and pids controllers enabled; or why not."""
    own = _own_directory(None)
    if own is None:
        return None, "no cgroup v2 hierarchy"
    parent = own.parent if own.name == WORKER_LEAF else own
    try:
        available = (parent / "cgroup.controllers").read_text().split()
        enabled = (parent / "cgroup.subtree_control").read_text().split()
    except OSError as error:
        return None, f"cgroup v2: {error.strerror}"
    wanted = [name for name in ("memory", "pids") if name in available]
    if "memory" not in available:
        return None, "cgroup v2 without the memory controller"
    if all(name in enabled for name in wanted):
        return parent, ""
    if not _delegated(parent):
        return None, f"cgroup v2: {parent} is not delegated to the worker"
    try:
        _enable(parent, wanted)
    except OSError as error:
        return None, f"cgroup v2: enabling {'+'.join(wanted)} in {parent}: {error.strerror}"
    return parent, ""


def _delegated(directory: Path) -> bool:
    """A cgroup namespace's root, a cgroup marked delegated, or one that is our own."""
    if _own_path(None) == "/":
        return True
    for name in DELEGATE_XATTRS:
        with contextlib.suppress(OSError):
            if os.getxattr(directory, name) == b"1":
                return True
    with contextlib.suppress(OSError):
        return os.geteuid() != 0 and directory.stat().st_uid == os.geteuid()
    return False


def _enable(parent: Path, controllers: Iterable[str]) -> None:
    """Give ``controllers`` to ``parent``'s children, moving its processes to a leaf first."""
    line = " ".join(f"+{name}" for name in controllers)
    try:
        _write(parent / "cgroup.subtree_control", line)
        return
    except OSError as error:
        if error.errno != errno.EBUSY:
            raise
    leaf = parent / WORKER_LEAF
    with contextlib.suppress(FileExistsError):
        leaf.mkdir()
    for pid in (parent / "cgroup.procs").read_text().split():
        with contextlib.suppress(ProcessLookupError):  # gone meanwhile
            _write(leaf / "cgroup.procs", pid)
    _write(parent / "cgroup.subtree_control", line)


def _v1_directory(controller: str) -> Path | None:
    """The worker's cgroup in the v1 hierarchy of ``controller``, if writable."""
    directory = _own_directory(controller)
    if directory is None or not os.access(directory, os.W_OK):
        return None
    return directory


def _own_directory(controller: str | None) -> Path | None:
    """The worker's cgroup directory in the v1 hierarchy of ``controller`` (None: v2)."""
    path = _own_path(controller)
    if path is None:
        return None
    for root, mount_point in _mounts(controller):
        if path == root or path.startswith(root.rstrip("/") + "/"):
            return Path(mount_point, path[len(root) :].lstrip("/"))
    return None


def _own_path(controller: str | None) -> str | None:
    """The worker's cgroup path, from /proc/self/cgroup."""
    with contextlib.suppress(OSError):
        for line in PROC_CGROUP.read_text().splitlines():
            _, controllers, path = line.split(":", 2)
            if controller is None and controllers == "":
                return path
            if controller is not None and controller in controllers.split(","):
                return path
    return None


def _mounts(controller: str | None) -> list[tuple[str, str]]:
    """(root, mount point) of each mount of the hierarchy of ``controller`` (None: v2)."""
    found = []
    with contextlib.suppress(OSError):
        for line in MOUNTINFO.read_text().splitlines():
            fields, _, tail = line.partition(" - ")
            parts, kind = fields.split(), tail.split()
            if len(parts) < 5 or len(kind) < 3:
                continue
            root, mount_point = _unescape(parts[3]), _unescape(parts[4])
            if controller is None and kind[0] == "cgroup2":
                found.append((root, mount_point))
            elif controller is not None and kind[0] == "cgroup":
                if controller in kind[2].split(","):
                    found.append((root, mount_point))
    return found


def _unescape(field: str) -> str:
    """mountinfo escapes space, tab, newline and backslash as octal."""
    return field.encode().decode("unicode_escape") if "\\" in field else field


def _make(directory: Path, settings: list[tuple[str, int]]) -> Path:
    directory.mkdir()
    try:
        for name, value in settings:
            _write(directory / name, value)
    except OSError:
        with contextlib.suppress(OSError):
            directory.rmdir()
        raise
    return directory


def _kill_members(directories: Iterable[Path]) -> bool:
    """SIGKILL every process in ``directories``, and no other; whether there was any."""
    found = False
    for directory in directories:
        members = _members(directory)
        if not members:
            continue
        found = True
        try:
            _write(directory / "cgroup.kill", 1)  # v2, Linux 5.14 and later
        except OSError:
            _kill_each(directory, members)
    return found


def _kill_each(directory: Path, members: Iterable[int]) -> None:
    """SIGKILL each of ``members`` that is still in ``directory``. A pidfd holds the process
    that had the pid when it was opened: if that pid is listed after, and the process is
    still alive when signalled, it was the member all along, not a process that took the
    pid of one that ended."""
    opened: dict[int, int] = {}
    try:
        for pid in members:
            try:
                opened[pid] = os.pidfd_open(pid)
            except ProcessLookupError:
                continue  # gone already
            except OSError as error:
                if error.errno == errno.ENOSYS:
                    return  # before Linux 5.3: see the module docstring
                continue
        still = _members(directory)
        for pid, descriptor in opened.items():
            if pid in still:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    signal.pidfd_send_signal(descriptor, signal.SIGKILL)
    finally:
        for descriptor in opened.values():
            os.close(descriptor)


def _members(directory: Path) -> set[int]:
    """The pids in the cgroup ``directory`` (none if it cannot be read)."""
    with contextlib.suppress(OSError, ValueError):
        return {int(pid) for pid in (directory / "cgroup.procs").read_text().split()}
    return set()


def _rmdir(directory: Path, deadline: float) -> bool:
    while True:
        try:
            directory.rmdir()
            return True
        except FileNotFoundError:
            return True
        except OSError as error:
            if error.errno != errno.EBUSY or time.monotonic() > deadline:
                return False
        time.sleep(0.02)


def _write(path: Path, value: int | str) -> None:
    descriptor = os.open(path, os.O_WRONLY)
    try:
        os.write(descriptor, str(value).encode())
    finally:
        os.close(descriptor)
