"""The namespaces and fresh root that ``run_code`` programs run in.

``enter`` is the ``preexec_fn`` of the program's process (C1). C1 joins the run's cgroup
(``_cgroups``), creates new user, mount, PID, network, IPC, UTS and cgroup namespaces and
forks twice:

- C1 stays outside the new PID namespace and ends as the program ended (same exit code, or
  killed by the same signal), so the worker reads the outcome from it as before;
- C2 is pid 1 of the new PID namespace: it builds the root the program sees, then only waits
  for the program; when it exits, the kernel kills whatever the program left behind;
- C3 drops every capability, becomes the program's user, installs the seccomp filter
  (``_seccomp``) and becomes the program.

Who the program is: a root worker maps itself (root in the namespace, which builds the root)
and the program's user, ``nobody`` in the namespace and, outside it:

- on the host (a worker whose namespace maps every id), ``RUN_ID_BASE`` + C1's pid: a user
  of its own per run, so the kernel enforces the process limit (never enforced for the
  host's root) and no per-user counter is shared with the worker or other runs;
- in a user-namespaced container (a worker whose namespace maps some ids), ``nobody`` of
  the worker's namespace where it maps it, else the highest id it maps: not root there
  either, shared by that worker's runs (each in a user namespace of its own, where the
  kernel counts its processes).

A short-lived helper forked before the namespaces writes that map, as ``newuidmap`` would.
A worker that can map no other id (an unprivileged one, or root of a namespace that maps
only its root) maps only itself, and the program runs as the worker's user: on a root
worker of such a namespace, uid 0 of its own namespace, without capabilities.

The root is an empty tmpfs with read-only bind mounts of the system (``/usr``, ``/lib*``,
``/bin``, a few files of ``/etc``), the Python installation and node, and the program file;
``/dev`` (null, zero, full, random, urandom; read-only, so no file can be made there); the
program's own /proc when the kernel lets it mount one (``hidepid=2``: the program sees its
own processes, not pid 1, which is a copy of the worker); and one size-limited tmpfs, the
scratch, that holds the working directory, ``/tmp`` and ``/dev/shm``. Nothing else of the
host exists in it: not the data dir, the worker's home or working directory, other users'
files, the database files, or any other process.

Everything here runs between fork and exec of a process whose parent has threads: only
system calls and plain Python, no locks, no logging. And no garbage collection: a
collection would write to every object of the worker's heap, which C1 and C2 share with the
worker copy-on-write, and the copies would count in the run's cgroup.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import gc
import os
import resource
import shutil
import signal
import stat
import struct
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from activities import _seccomp

CLONE_NEWNS = 0x00020000
CLONE_NEWCGROUP = 0x02000000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000
NAMESPACES = (
    CLONE_NEWUSER
    | CLONE_NEWNS
    | CLONE_NEWPID
    | CLONE_NEWNET
    | CLONE_NEWIPC
    | CLONE_NEWUTS
    | CLONE_NEWCGROUP
)

MS_RDONLY = 0x1
MS_NOSUID = 0x2
MS_NODEV = 0x4
MS_NOEXEC = 0x8
MS_REMOUNT = 0x20
MS_NOATIME = 0x400
MS_NODIRATIME = 0x800
MS_BIND = 0x1000
MS_REC = 0x4000
MS_PRIVATE = 0x40000
MS_RELATIME = 0x200000
MNT_DETACH = 0x2
# statvfs flags whose mount flags a bind mount in a user namespace must keep.
KEPT_FLAGS = (
    (os.ST_NOEXEC, MS_NOEXEC),
    (os.ST_NOATIME, MS_NOATIME),
    (os.ST_NODIRATIME, MS_NODIRATIME),
    (os.ST_RELATIME, MS_RELATIME),
)

PR_SET_PDEATHSIG = 1
PR_SET_DUMPABLE = 4
PR_SET_SECCOMP = 22
PR_CAPBSET_DROP = 24
PR_SET_SECUREBITS = 28
PR_SET_NO_NEW_PRIVS = 38
PR_CAP_AMBIENT = 47
PR_CAP_AMBIENT_CLEAR_ALL = 4
SECCOMP_MODE_FILTER = 2
KEYCTL_JOIN_SESSION_KEYRING = 1
# noroot, no-setuid-fixup and keep-caps, each locked: no way back to capabilities.
SECUREBITS = 0x1 | 0x2 | 0x4 | 0x8 | 0x20
LAST_CAPABILITY = 63
# pivot_root has no libc wrapper: its system call number, by machine.
SYS_PIVOT_ROOT = {"x86_64": 155, "aarch64": 41, "riscv64": 41}
# A root worker's programs: this plus the run's first pid on the host (pid_max is at most
# 2**22), above the ranges of systemd-nspawn's containers, below 2**31.
RUN_ID_BASE = 1_900_000_000
NOBODY = 65534
# The scratch's file count: inodes cost kernel memory that its size does not count.
SCRATCH_FILES = 16384
# /dev holds its devices, /dev/shm and four symlinks; it is read-only once they are made.
DEV_OPTIONS = "mode=0755,size=64k,nr_inodes=32"
# uid_map of a namespace that maps every id (the host's).
EVERY_ID = ["0", "0", "4294967295"]
# The program's first process is the first the kernel's OOM killer picks, the worker last.
OOM_SCORE_ADJ = b"1000"

SYSTEM_PATHS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
ETC_FILES = (
    "ld.so.cache",
    "ld.so.conf",
    "ld.so.conf.d",
    "localtime",
    "nsswitch.conf",
    "passwd",
    "group",
    "hosts",
    "ssl/certs",
    "alternatives",
)
DEVICES = ("null", "zero", "full", "random", "urandom")
ERROR_FILE = "sandbox-error"
# As Docker's defaults: /proc parts a root process could write through, made read-only, and
# parts that say too much about the host, hidden.
PROC_READ_ONLY = ("sys", "sysrq-trigger", "bus", "fs", "irq")
PROC_MASKED = (
    "kcore",
    "keys",
    "key-users",
    "timer_list",
    "sched_debug",
    "latency_stats",
    "acpi",
    "asound",
    "scsi",
)

_libc = ctypes.CDLL(None, use_errno=True)
Limits = list[tuple[int, int, int]]


class SandboxUnavailable(Exception):
    """The kernel (or a container's seccomp or AppArmor profile) refused the sandbox."""


@dataclass(frozen=True)
class Layout:
    """What the program sees of the host: paths mounted read-only at the same place, the
    program file (read-only) and the working directory (on the scratch), both at their
    path in the run's folder ``base``. ``root`` is where the new root is built."""

    read_only: tuple[str, ...]
    program: str
    workdir: str
    base: str
    root: str


@dataclass(frozen=True)
class Identity:
    """The program's user and group in its namespace, and who they are outside it:
    ``per_run``, ``RUN_ID_BASE`` + the run's first pid (a root worker on the host); else
    ``outer`` (an id of a root worker's namespace that maps more than its root); else the
    worker's own ids."""

    uid: int
    gid: int
    per_run: bool
    outer: int | None = None


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.POINTER(ctypes.c_char))]


def interpreter_paths(node: str | None = None) -> list[str]:
    """What the interpreters need outside the system paths: Python's ``bin`` and ``lib``
    (of the installation and of the virtual environment) and node's binary. Never a whole
    prefix: a virtual environment made in a project's root would bring the project."""
    paths: set[str] = set()
    for prefix in {sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix}:
        for part in ("bin", "lib", "lib64", "pyvenv.cfg"):
            if os.path.lexists(os.path.join(prefix, part)):
                paths.add(os.path.join(prefix, part))
    node = node or shutil.which("node")
    if node:
        paths.add(str(Path(node).resolve()))
    return sorted(paths)


def available() -> bool:
    """Whether this machine's architecture is one the sandbox knows."""
    machine = os.uname().machine
    return machine in SYS_PIVOT_ROOT and _seccomp.supported(machine)


def identity() -> Identity:
    """Who the program runs as (see the module docstring)."""
    if os.getuid() == 0:
        maps = _id_maps()
        if all(fields == EVERY_ID for fields in maps):
            return Identity(NOBODY, NOBODY, per_run=True)
        spare = spare_id(*maps)
        if spare is not None:
            return Identity(NOBODY, NOBODY, per_run=False, outer=spare)
    return Identity(os.getuid(), os.getgid(), per_run=False)


def _id_maps() -> tuple[list[str], list[str]]:
    """The fields of the worker's uid_map and gid_map (empty where unreadable)."""
    maps = []
    for name in ("uid_map", "gid_map"):
        try:
            maps.append(Path(f"/proc/self/{name}").read_text().split())
        except OSError:
            maps.append([])
    return maps[0], maps[1]


def spare_id(uid_map: list[str], gid_map: list[str]) -> int | None:
    """An id other than root that the worker's namespace maps as both a user and a group:
    ``nobody`` where it is one, else the highest; None where there is none."""
    both = [
        top
        for top in [NOBODY, *_range_ends(uid_map), *_range_ends(gid_map)]
        if top != 0 and _maps(uid_map, top) and _maps(gid_map, top)
    ]
    if not both:
        return None
    return NOBODY if NOBODY in both else max(both)


def _ranges(fields: list[str]) -> list[tuple[int, int]]:
    """(first id, count) of each line of an id map, in the namespace's own ids."""
    numbers = [int(field) for field in fields]
    return [(numbers[i], numbers[i + 2]) for i in range(0, len(numbers) - 2, 3)]


def _range_ends(fields: list[str]) -> list[int]:
    return [first + count - 1 for first, count in _ranges(fields) if count]


def _maps(fields: list[str], number: int) -> bool:
    return any(first <= number < first + count for first, count in _ranges(fields))


def layout_for(base: Path, program: Path, workdir: Path, hidden: Iterable[Path] = ()) -> Layout:
    """The sandbox's view for a run whose folder is ``base``. Nothing that contains a
    ``hidden`` path (the data dir, the files root, the worker's home and working directory)
    is ever mounted, whatever the interpreters' layout."""
    secret = [str(path.resolve()) for path in hidden]
    paths = [p for p in SYSTEM_PATHS if os.path.lexists(p)]
    paths += [f"/etc/{name}" for name in ETC_FILES if os.path.lexists(f"/etc/{name}")]
    for path in interpreter_paths():
        if any(_under(path, kept) for kept in paths):
            continue
        if any(_under(hidden_path, path) for hidden_path in secret):
            continue  # it would show a hidden path
        paths.append(path)
    root = base / "root"
    root.mkdir(mode=0o700)
    return Layout(tuple(paths), str(program), str(workdir), str(base), str(root))


def _under(path: str, parent: str) -> bool:
    return path == parent or path.startswith(parent.rstrip("/") + "/")


def error_of(base: Path) -> str | None:
    """Why the sandbox could not be built for the run in ``base``, if it could not."""
    with contextlib.suppress(OSError):
        return (base / ERROR_FILE).read_text() or None
    return None


def plain(limits: Limits, cgroup: tuple[str, ...]) -> Callable[[], None]:
    """The ``preexec_fn`` of a program run without the sandbox: its cgroup and limits."""

    def _preexec() -> None:
        gc.disable()  # as in the sandbox's C1 (see the module docstring)
        _join(cgroup)
        for kind, soft, hard in limits:
            resource.setrlimit(kind, (soft, hard))

    return _preexec


def enter(
    layout: Layout, limits: Limits, *, scratch_bytes: int, cgroup: tuple[str, ...] = ()
) -> Callable[[], None]:
    """The ``preexec_fn`` that puts the program in its sandbox (see the module docstring)."""
    who = identity()
    machine = os.uname().machine
    seccomp = _filter(_seccomp.program(machine))
    keyctl = _seccomp.NUMBERS[machine]["keyctl"]
    scratch = f"mode=0755,size={scratch_bytes},nr_inodes={SCRATCH_FILES}"
    parent = os.getpid()

    def _program() -> None:
        """C3: no capabilities, no way to gain any, its user, limits and filter."""
        _libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        os.chdir(layout.workdir)
        _give_stdio(who)
        for kind, soft, hard in limits:
            resource.setrlimit(kind, (soft, hard))
        _libc.prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0)
        for capability in range(LAST_CAPABILITY + 1):
            _libc.prctl(PR_CAPBSET_DROP, capability)
        _check(_libc.prctl(PR_SET_SECUREBITS, SECUREBITS), "securebits")
        os.setresgid(who.gid, who.gid, who.gid)
        os.setresuid(who.uid, who.uid, who.uid)
        # A fresh, empty session keyring (the filter then refuses every keyring call).
        _libc.syscall(keyctl, KEYCTL_JOIN_SESSION_KEYRING, None)
        _check(_libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "no_new_privs")
        _check(
            _libc.prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.byref(seccomp), 0, 0),
            "seccomp",
        )

    def _init(report: int, note: int) -> None:
        """C2, pid 1 of the new PID namespace: build the root, start the program, wait."""
        _libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        # Its memory is a copy of the worker's: nothing in the sandbox may read it.
        _libc.prctl(PR_SET_DUMPABLE, 0)
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        os.umask(0o022)  # the program's user must get through what is made here
        _step(note, "root", lambda: _build_root(layout, who, scratch))
        program = os.fork()
        if program == 0:
            _step(note, "program", _program)
            return  # C3 goes on to exec the program
        _wait_for(program, report)

    def _c1() -> None:
        # subprocess turns the collector off around its fork when there is a preexec_fn
        # (CPython's _posixsubprocess); C1, C2 and C3 keep it off whatever it does.
        gc.disable()
        # The worker's death ends the sandbox too, whatever the program does.
        _libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != parent:
            os._exit(1)
        flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC
        note = os.open(os.path.join(layout.base, ERROR_FILE), flags, 0o600)
        _step(note, "cgroup", lambda: _join(cgroup))
        with contextlib.suppress(OSError):
            _write("/proc/self/oom_score_adj", OOM_SCORE_ADJ)
        _step(note, "namespaces", lambda: _unshare(who))
        report_r, report_w = os.pipe()
        init = os.fork()
        if init:
            os.close(report_w)
            _relay(init, report_r)
        os.close(report_r)
        _init(report_w, note)

    return _c1


def _filter(code: bytes) -> _SockFprog:
    """A ``struct sock_fprog`` for ``code``; it keeps its buffer alive."""
    buffer = ctypes.create_string_buffer(code, len(code))
    return _SockFprog(len(code) // 8, ctypes.cast(buffer, ctypes.POINTER(ctypes.c_char)))


def _step(note: int, what: str, action: Callable[[], None]) -> None:
    """Run ``action``; on failure leave the reason where the worker finds it, and fail."""
    try:
        action()
    except OSError as error:
        with contextlib.suppress(OSError):
            os.write(note, f"{what}: {error}".encode())
        raise


def _join(cgroup: tuple[str, ...]) -> None:
    for procs in cgroup:
        _write(procs, str(os.getpid()).encode())


def _unshare(who: Identity) -> None:
    """New namespaces, and this process's ids mapped in the new user namespace."""
    if not who.per_run and who.outer is None:
        uid, gid = os.getuid(), os.getgid()
        _check(_libc.unshare(NAMESPACES), "unshare")
        _write("/proc/self/setgroups", b"deny")
        _write("/proc/self/uid_map", f"{uid} {uid} 1".encode())
        _write("/proc/self/gid_map", f"{gid} {gid} 1".encode())
        return
    # Mapping a user other than its own takes a process outside the new namespace.
    os.setgroups([])
    me = os.getpid()
    outer = RUN_ID_BASE + me if who.per_run else who.outer
    ready_r, ready_w = os.pipe()
    helper = os.fork()
    if helper == 0:
        os.close(ready_w)
        _map_ids(me, ready_r, f"0 0 1\n{who.uid} {outer} 1\n", f"0 0 1\n{who.gid} {outer} 1\n")
    os.close(ready_r)
    try:
        _check(_libc.unshare(NAMESPACES), "unshare")
        _write("/proc/self/setgroups", b"deny")
        os.write(ready_w, b"1")
    finally:
        os.close(ready_w)
        _, status = os.waitpid(helper, 0)
    if status != 0:
        raise OSError(errno.EPERM, f"the id maps were refused ({outer})")


def _map_ids(pid: int, ready: int, uid_map: str, gid_map: str) -> None:
    """The helper: once ``pid`` has its namespaces, write its id maps; then exit."""
    _libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    code = 1
    try:
        if os.read(ready, 1) == b"1":
            _write(f"/proc/{pid}/uid_map", uid_map.encode())
            _write(f"/proc/{pid}/gid_map", gid_map.encode())
            code = 0
    except OSError:
        pass
    os._exit(code)


def _give_stdio(who: Identity) -> None:
    """The program's pipes become its user's, so it can reopen them (``/dev/stdout``)."""
    for descriptor in (0, 1, 2):
        with contextlib.suppress(OSError):
            info = os.fstat(descriptor)
            if stat.S_ISFIFO(info.st_mode) and info.st_uid == os.getuid():
                os.fchown(descriptor, who.uid, who.gid)


def _relay(init: int, report: int) -> None:
    """C1: end as the program ended."""
    os.closerange(3, report)
    os.closerange(report + 1, _max_fd())
    _, status = os.waitpid(init, 0)
    data = os.read(report, 4)
    if len(data) == 4:
        status = struct.unpack("i", data)[0]
    _end_like(status)


def _wait_for(program: int, report: int) -> None:
    """C2 after the fork: reap every child; report the program's status, then exit."""
    os.closerange(3, report)
    os.closerange(report + 1, _max_fd())
    while True:
        try:
            pid, status = os.wait()
        except ChildProcessError:
            os._exit(1)
        if pid == program:
            os.write(report, struct.pack("i", status))
            os._exit(0)


def _build_root(layout: Layout, who: Identity, scratch: str) -> None:
    root = layout.root
    _mount(None, "/", None, MS_REC | MS_PRIVATE)
    _mount("tmpfs", root, "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755,size=16m")
    # One tmpfs for every place the program can write, each a directory of it.
    staging = _make_dir(root, "/.scratch")
    _mount("tmpfs", staging, "tmpfs", MS_NOSUID | MS_NODEV, scratch)
    for name, mode in (("work", 0o700), ("tmp", 0o1777), ("shm", 0o1777)):
        os.mkdir(f"{staging}/{name}")
        os.chmod(f"{staging}/{name}", mode)
    os.chown(f"{staging}/work", who.uid, who.gid)
    _bind(f"{staging}/tmp", root + "/tmp", read_only=False)
    for path in layout.read_only:
        _bind(path, root + path, read_only=True)
    _bind(layout.program, root + layout.program, read_only=True)
    _bind(f"{staging}/work", root + layout.workdir, read_only=False)
    dev = _make_dir(root, "/dev")
    _mount("tmpfs", dev, "tmpfs", MS_NOSUID | MS_NOEXEC, DEV_OPTIONS)
    for name in DEVICES:
        _bind(f"/dev/{name}", f"{dev}/{name}", read_only=False)
    _bind(f"{staging}/shm", f"{dev}/shm", read_only=False)
    _mount(None, f"{dev}/shm", None, MS_REMOUNT | MS_BIND | MS_NOSUID | MS_NODEV | MS_NOEXEC)
    for name, target in (("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0")):
        os.symlink(target, f"{dev}/{name}")
    for number, name in enumerate(("stdout", "stderr"), start=1):
        os.symlink(f"/proc/self/fd/{number}", f"{dev}/{name}")
    # Its own mounts (the devices, /dev/shm) stay as they are.
    _mount(None, dev, None, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NOEXEC)
    _check(_libc.umount2(staging.encode(), MNT_DETACH), "umount scratch")
    os.rmdir(staging)
    # The sandbox's own processes only, and of those only the program's (hidepid): pid 1
    # is a copy of the worker. Refused in some containers, then it goes without.
    proc = _make_dir(root, "/proc")
    try:
        _mount("proc", proc, "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, "hidepid=2")
    except OSError:
        pass
    else:
        _confine_proc(proc)
    os.chdir(root)
    _check(_libc.syscall(SYS_PIVOT_ROOT[os.uname().machine], b".", b"."), "pivot_root")
    _check(_libc.umount2(b".", MNT_DETACH), "umount old root")
    os.chdir("/")
    _mount(None, "/", None, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV)


def _confine_proc(proc: str) -> None:
    """What a process that runs as root (without capabilities) could still change or read
    through /proc: read-only or masked, as container runtimes do. And no user namespace
    inside this one: nested namespaces are kernel attack surface."""
    _write(f"{proc}/sys/user/max_user_namespaces", b"0")
    for name in PROC_READ_ONLY:
        if os.path.lexists(f"{proc}/{name}"):
            _bind(f"{proc}/{name}", f"{proc}/{name}", read_only=True)
    for name in PROC_MASKED:
        path = f"{proc}/{name}"
        if os.path.isdir(path):
            _mount("tmpfs", path, "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC | MS_RDONLY, "size=0")
        elif os.path.lexists(path):
            _mount("/dev/null", path, None, MS_BIND)


def _bind(source: str, target: str, *, read_only: bool) -> None:
    info = os.lstat(source)
    os.makedirs(os.path.dirname(target), exist_ok=True)
    if stat.S_ISLNK(info.st_mode):
        os.symlink(os.readlink(source), target)
        return
    if stat.S_ISDIR(info.st_mode):
        os.makedirs(target, exist_ok=True)
    else:
        os.close(os.open(target, os.O_CREAT | os.O_WRONLY, 0o644))
    _mount(source, target, None, MS_BIND)
    if read_only:
        flags = MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV
        held = os.statvfs(source).f_flag
        flags |= sum(mount_flag for st_flag, mount_flag in KEPT_FLAGS if held & st_flag)
        _mount(None, target, None, flags)


def _make_dir(root: str, path: str) -> str:
    os.makedirs(root + path, exist_ok=True)
    return root + path


def _mount(
    source: str | None, target: str, kind: str | None, flags: int, options: str | None = None
) -> None:
    result = _libc.mount(
        source.encode() if source else None,
        target.encode(),
        kind.encode() if kind else None,
        ctypes.c_ulong(flags),
        options.encode() if options else None,
    )
    _check(result, f"mount {target}")


def _check(result: int, what: str) -> None:
    if result != 0:
        number = ctypes.get_errno()
        raise OSError(number, f"{what}: {os.strerror(number)}")


def _write(path: str, data: bytes) -> None:
    descriptor = os.open(path, os.O_WRONLY)
    try:
        os.write(descriptor, data)
    finally:
        os.close(descriptor)


def _end_like(status: int) -> None:
    """End this process as the process with ``status`` ended."""
    if os.WIFSIGNALED(status):
        number = os.WTERMSIG(status)
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        with contextlib.suppress(OSError, ValueError):  # SIGKILL's cannot change
            signal.signal(number, signal.SIG_DFL)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, [number])
        os.kill(os.getpid(), number)
        os._exit(128 + number)
    os._exit(os.WEXITSTATUS(status) if os.WIFEXITED(status) else 1)


def _max_fd() -> int:
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    return soft if soft != resource.RLIM_INFINITY else 65536
