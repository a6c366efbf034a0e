"""The ``run_code`` action: a Python or JavaScript program in a process sandbox.

The program runs with its input as JSON on stdin, in an empty working directory, with a
scrubbed environment, resource limits (CPU, memory, file size, processes, open files, core
dumps) and a wall-clock timeout that ends it and everything it started. It runs in new user,
mount, PID, network, IPC, UTS and cgroup namespaces, as the user ``_sandbox`` chooses for
it, under a seccomp filter, in a fresh root that holds only the system's programs and
libraries, the interpreters, its program file and a size-limited scratch tmpfs (see
``activities/_sandbox.py``): no network, no other process, no file of the worker's
(settings, keys, databases, other users' folders). Where the kernel refuses namespaces
(Docker's default seccomp profile), the run fails with ``CodeIsolationUnavailable``, unless
``RUN_CODE_REQUIRE_ISOLATION`` is off.

Where the kernel and the worker's permissions allow, a cgroup bounds the memory (scratch
included) and the processes of the program as a whole (``activities/_cgroups.py``); where
they do not, memory_mb bounds each of its processes (what an address space does not count
is refused by the seccomp filter or bounded by the open-files limit, but for some kernel
buffers), the run's log says so and its result has ``memory_isolated`` false.

Each run's folder (the rendered program, which may hold secrets) is locked while the run
lasts; ``remove_leftover_runs`` removes those a killed worker left, at the worker's start.

It is a process sandbox, not a VM: the same kernel. Run ``cronpilot-code`` on isolated
workers (``CRONPILOT_WORKER_QUEUES=code``) when the code is not trusted.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import logging
import math
import os
import resource
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, NoReturn

from activities import _cgroups, _sandbox
from activities._action import ActionRun
from activities._failure import ActionFailure
from activities._redaction import redact
from schema.actions import RunCodeConfig

log = logging.getLogger("cronpilot.run_code")
MiB = 1024 * 1024
MAX_STREAM_BYTES = 64 * 1024
MAX_FILE_BYTES = 10 * MiB
MAX_PROCESSES = 64
# Per process: what a descriptor holds in the kernel (a pipe's or a socket's buffers) is
# memory that the address-space limit does not count.
MAX_OPEN_FILES = 256
# Node's own threads and native allocations, beyond the V8 heap that memory_mb bounds.
NODE_HEADROOM_MB = 64
# In the run's cgroup beside the program: the sandbox's first two processes, forks of the
# worker. They share its pages until they write to one; what they write (the few objects
# their Python code uses; no garbage collection runs in them) and their kernel objects
# (namespaces, mounts) take a few MiB. Their page tables are copies of the worker's, which
# grow with its heap: C2's for the whole run, C3's until it becomes the program.
SANDBOX_TASKS = 2
SANDBOX_HEADROOM_MB = 16
PAGE_TABLE_COPIES = 2
# The working directory, /tmp and /dev/shm share one tmpfs of memory_mb, at most this.
MAX_SCRATCH_MB = 128
FOLDER_PREFIX = _cgroups.PREFIX
LOCK_FILE = "lock"
# A folder without a lock (made before runs took one) is a leftover once older than any
# run lasts (timeout_seconds is at most an hour).
UNLOCKED_LEFTOVER_SECONDS = 2 * 3600
# After the program ends, how long its pipes may stay open (by a process that left its group).
DRAIN_SECONDS = 1.0
LOG_TAIL_CHARS = 2000
MEMORY_MARKERS = (
    "MemoryError",
    "JavaScript heap out of memory",
    "Array buffer allocation failed",
    "std::bad_alloc",
    "Fatal process out of memory",
)
Isolation = Literal["namespaces", "none"]


@dataclass
class _Capture:
    """The first and the last MAX_STREAM_BYTES of a stream, and its full size."""

    head: bytearray = field(default_factory=bytearray)
    tail: bytearray = field(default_factory=bytearray)
    size: int = 0

    def feed(self, chunk: bytes) -> None:
        self.size += len(chunk)
        self.head += chunk[: MAX_STREAM_BYTES - len(self.head)]
        self.tail += chunk
        del self.tail[:-MAX_STREAM_BYTES]

    @property
    def truncated(self) -> bool:
        return self.size > MAX_STREAM_BYTES

    def text(self) -> str:
        return self.head.decode("utf-8", errors="replace")

    def last_line(self) -> bytes | None:
        """The last non-empty line, unless it is longer than what the tail keeps."""
        lines = self.tail.split(b"\n")
        if self.truncated:
            lines = lines[1:]
        return next((bytes(line) for line in reversed(lines) if line.strip()), None)


class _Protocol(asyncio.subprocess.SubprocessStreamProtocol):
    """The usual stream protocol, plus an event when the program exits: ``Process.wait()``
    also waits for its pipes, which a leftover background process can hold open."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(limit=MAX_STREAM_BYTES, loop=loop)
        self.exited = asyncio.Event()

    def process_exited(self) -> None:
        super().process_exited()
        self.exited.set()


async def execute(run: ActionRun, config: RunCodeConfig) -> dict[str, Any]:
    """Run the program; return its exit code, capped stdout/stderr and last-line JSON output."""
    if not run.deps.settings.run_code_enabled:
        run.fail(
            "CodeExecutionDisabled",
            "run_code is disabled on this worker (CRONPILOT_RUN_CODE_ENABLED=false)",
            retryable=False,
        )
    base, lock = await asyncio.to_thread(_new_folder)
    try:
        return await _execute_in(run, config, base)
    finally:
        await asyncio.to_thread(_remove_folder, base, lock)


async def _execute_in(run: ActionRun, config: RunCodeConfig, base: Path) -> dict[str, Any]:
    # The program lives next to the working directory, not in it: argv cannot carry 200 kB
    # of code, and the program must start in an empty directory.
    program = base / ("program.py" if config.language == "python" else "program.cjs")
    program.write_text(config.code, encoding="utf-8")
    program.chmod(0o644)  # for the program's own user; the folder is the worker's alone
    workdir = base / "work"
    workdir.mkdir()
    # Nothing of the worker's environment (settings, keys) passes; scratch files stay here.
    env = {"PATH": "/usr/bin:/bin", "HOME": str(workdir), "TMPDIR": str(workdir), "LANG": "C.UTF-8"}
    argv = _command(run, config, program)
    files = _Files(base, program, workdir, argv, env)
    run.log(f"running {config.language} ({len(config.code)} characters)")
    async with _run_group(run, config, base.name) as group:
        return await _run(run, config, files, group)


@dataclass(frozen=True)
class _Files:
    """A run's folder, program file, working directory, command line and environment."""

    base: Path
    program: Path
    workdir: Path
    argv: list[str]
    env: dict[str, str]


async def _run(
    run: ActionRun, config: RunCodeConfig, files: _Files, group: _cgroups.RunGroup | None
) -> dict[str, Any]:
    started = time.perf_counter()
    transport, protocol, isolation = await _spawn(run, config, files, group)
    stdout, stderr = _Capture(), _Capture()
    tasks = [
        asyncio.create_task(_feed(protocol.stdin, json.dumps(config.input).encode())),
        asyncio.create_task(_drain(protocol.stdout, stdout)),
        asyncio.create_task(_drain(protocol.stderr, stderr)),
    ]
    timed_out = False
    try:
        try:
            await asyncio.wait_for(protocol.exited.wait(), config.timeout_seconds)
        except TimeoutError:
            timed_out = True
    finally:
        # Also on success and on cancellation: background processes must not outlive the run.
        _kill_group(transport.get_pid())
        await protocol.exited.wait()
        await _settle(tasks)
        transport.close()
    elapsed_ms = round((time.perf_counter() - started) * 1000)
    exit_code = transport.get_returncode()
    assert exit_code is not None
    run.log(f"exit code {exit_code} after {elapsed_ms} ms")
    memory_isolated = group is not None and group.memory
    # In the cgroup, an OOM kill may end one process of many: the program went over anyway.
    oom_kills = _cgroups.oom_kills(group) if group is not None and memory_isolated else 0
    if timed_out or exit_code != 0 or oom_kills:
        _fail(run, config, exit_code, timed_out, oom_kills, stdout, stderr)
    return {
        "exit_code": exit_code,
        "stdout": _shown(run, stdout),
        "stdout_truncated": stdout.truncated,
        "stderr": _shown(run, stderr),
        "stderr_truncated": stderr.truncated,
        "output": _parse(stdout.last_line()),
        "network_isolated": isolation != "none",
        "memory_isolated": memory_isolated,
        "elapsed_ms": elapsed_ms,
    }


def _shown(run: ActionRun, capture: _Capture) -> str:
    """A stream's first MAX_STREAM_BYTES as the result shows them: when the stream went on,
    redacted as the beginning of a longer text, so a secret printed across the cut leaves
    no part of itself."""
    text = capture.text()
    return run.redactor().redact_beginning(text) if capture.truncated else text


def _new_folder() -> tuple[Path, int]:
    """A fresh run folder and its lock, held until the run's end. The folder appears under
    its name with the lock already held, so no sweep ever takes a live run's folder."""
    staging = Path(tempfile.mkdtemp(prefix="." + FOLDER_PREFIX))
    lock = os.open(staging / LOCK_FILE, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    fcntl.flock(lock, fcntl.LOCK_EX)
    base = staging.with_name(staging.name.removeprefix("."))
    os.rename(staging, base)
    return base, lock


def _remove_folder(base: Path, lock: int) -> None:
    try:
        shutil.rmtree(base, ignore_errors=True)
    finally:
        os.close(lock)


def remove_leftover_runs(directory: Path | None = None) -> list[str]:
    """Remove what killed workers left behind: run folders no run holds (their rendered
    programs may hold secrets), then their cgroups. Call once, as the worker starts; live
    runs of other workers sharing the directory keep theirs."""
    removed: list[str] = []
    alive: list[str] = []
    for entry in Path(directory or tempfile.gettempdir()).glob(FOLDER_PREFIX + "*"):
        (removed if _remove_leftover(entry) else alive).append(entry.name)
    groups = _cgroups.remove_leftovers(alive, removed)
    if removed or groups:
        log.warning("removed leftover run_code folders %s and cgroups %s", removed, groups)
    return removed


def _remove_leftover(folder: Path) -> bool:
    """Remove ``folder`` if it is ours and no run holds its lock; whether it was removed."""
    try:
        info = folder.lstat()
    except OSError:
        return False
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid():
        return False
    try:
        lock = os.open(folder / LOCK_FILE, os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        if time.time() - info.st_mtime < UNLOCKED_LEFTOVER_SECONDS:
            return False
        shutil.rmtree(folder, ignore_errors=True)
        return True
    except OSError:
        return False
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(lock)
        return False
    _remove_folder(folder, lock)
    return True


@contextlib.asynccontextmanager
async def _run_group(
    run: ActionRun, config: RunCodeConfig, name: str
) -> AsyncIterator[_cgroups.RunGroup | None]:
    """The run's cgroup, where one can be made; removed (with what is left in it) after."""
    megabytes = _tree_memory_mb(config)
    tasks = MAX_PROCESSES + SANDBOX_TASKS
    group, reason = await asyncio.to_thread(_cgroups.create, name, megabytes * MiB, tasks)
    if group is not None:
        run.log(f"the program's limits hold for all its processes together ({group.describe()})")
    if group is None or not group.memory:
        run.log(
            f"no memory cgroup ({reason}): memory_mb bounds each process of the program, "
            "not all of them together",
            "warning",
        )
    try:
        yield group
    finally:
        if group is not None and not await asyncio.to_thread(_cgroups.remove, group):
            log.warning("could not remove the cgroup %s", [str(d) for d in group.directories])


def _tree_memory_mb(config: RunCodeConfig) -> int:
    """The cgroup's memory limit: memory_mb, node's headroom, the sandbox's own processes."""
    node = NODE_HEADROOM_MB if config.language == "javascript" else 0
    return config.memory_mb + node + SANDBOX_HEADROOM_MB + _page_tables_mb()


def _page_tables_mb() -> int:
    """The MiB of the worker's page tables that the sandbox's processes copy."""
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmPTE:"):
                return math.ceil(PAGE_TABLE_COPIES * int(line.split()[1]) / 1024)
    return 0


def _scratch_bytes(config: RunCodeConfig) -> int:
    return min(config.memory_mb, MAX_SCRATCH_MB) * MiB


def _command(run: ActionRun, config: RunCodeConfig, program: Path) -> list[str]:
    if config.language == "python":
        # -I: no PYTHON* variables, user site or script directory; -B: no .pyc writes.
        return [sys.executable, "-I", "-B", str(program)]
    node = shutil.which("node")
    if node is None:
        run.fail(
            "CodeLanguageUnavailable",
            "javascript needs `node` on the worker's PATH; it was not found",
            retryable=False,
        )
    return [node, f"--max-old-space-size={config.memory_mb}", str(program)]


async def _spawn(
    run: ActionRun, config: RunCodeConfig, files: _Files, group: _cgroups.RunGroup | None
) -> tuple[asyncio.SubprocessTransport, _Protocol, Isolation]:
    """Start the program in its sandbox; without namespaces only when the operator allows."""
    loop = asyncio.get_running_loop()
    cgroup = group.procs if group is not None else ()

    async def start(preexec: Callable[[], None]) -> tuple[asyncio.SubprocessTransport, _Protocol]:
        return await loop.subprocess_exec(
            lambda: _Protocol(loop),
            *files.argv,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            cwd=files.workdir,
            env=files.env,
            start_new_session=True,
            preexec_fn=preexec,
        )

    reason = f"unsupported machine {os.uname().machine}"
    if _sandbox.available():
        settings = run.deps.settings
        hidden = [settings.data_dir, settings.files_root, Path.home(), Path.cwd()]
        layout = _sandbox.layout_for(files.base, files.program, files.workdir, hidden)
        limits = _limits(config, "namespaces")
        scratch = _scratch_bytes(config)
        try:
            transport, protocol = await start(
                _sandbox.enter(layout, limits, scratch_bytes=scratch, cgroup=cgroup)
            )
            return transport, protocol, "namespaces"
        except subprocess.SubprocessError:
            reason = _sandbox.error_of(files.base) or "the sandbox could not be set up"
    if run.deps.settings.run_code_require_isolation:
        run.fail(
            "CodeIsolationUnavailable",
            f"the kernel refused the sandbox ({reason}); the program did not run. Allow "
            "user namespaces for the worker, or set CRONPILOT_RUN_CODE_REQUIRE_ISOLATION=false",
            retryable=False,
        )
    run.log(f"no sandbox ({reason}): the program sees what the worker sees", "warning")
    transport, protocol = await start(_sandbox.plain(_limits(config, "none"), cgroup))
    return transport, protocol, "none"


def _limits(config: RunCodeConfig, isolation: Isolation) -> list[tuple[int, int, int]]:
    """(resource, soft, hard) for the child, never above the worker's own hard limits."""
    cpu_seconds = math.ceil(config.timeout_seconds) + 1
    memory = config.memory_mb * MiB
    processes = _process_limit(isolation)
    limits = [
        # The soft limit sends SIGXCPU; the hard one, a second later, SIGKILL.
        (resource.RLIMIT_CPU, cpu_seconds, cpu_seconds + 1),
        (resource.RLIMIT_FSIZE, MAX_FILE_BYTES, MAX_FILE_BYTES),
        (resource.RLIMIT_NPROC, processes, processes),
        (resource.RLIMIT_NOFILE, MAX_OPEN_FILES, MAX_OPEN_FILES),
        (resource.RLIMIT_CORE, 0, 0),
    ]
    if config.language == "python":
        limits.append((resource.RLIMIT_AS, memory, memory))
    else:
        # V8 reserves hundreds of MB of address space it never uses, so RLIMIT_AS cannot
        # bound node; RLIMIT_DATA counts only writable private memory.
        data = memory + NODE_HEADROOM_MB * MiB
        limits.append((resource.RLIMIT_DATA, data, data))
    return [
        (kind, _within_hard_limit(kind, soft), _within_hard_limit(kind, hard))
        for kind, soft, hard in limits
    ]


def _process_limit(isolation: Isolation) -> int:
    """RLIMIT_NPROC counts every task of the real uid (threads too), for that user namespace."""
    if isolation == "namespaces" or os.getuid() == 0:
        # In a fresh user namespace only the sandbox's tasks of the program's user count
        # (never the host's root: see _sandbox). Without one, the kernel never enforces it
        # for root, so the value does not matter (a pids cgroup still holds).
        return MAX_PROCESSES
    # Without a namespace the worker's own threads and other sandboxes count too.
    return _tasks_of(os.getuid()) + MAX_PROCESSES


def _tasks_of(uid: int) -> int:
    count = 0
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            if entry.stat().st_uid == uid:
                count += len(os.listdir(f"/proc/{entry.name}/task"))
    return count


def _within_hard_limit(kind: int, value: int) -> int:
    hard = resource.getrlimit(kind)[1]
    return value if hard == resource.RLIM_INFINITY else min(value, hard)


async def _feed(stdin: asyncio.StreamWriter | None, data: bytes) -> None:
    assert stdin is not None
    # A program that exits without reading its input closes the pipe first.
    with contextlib.suppress(BrokenPipeError, ConnectionResetError):
        stdin.write(data)
        await stdin.drain()
    stdin.close()


async def _drain(stream: asyncio.StreamReader | None, capture: _Capture) -> None:
    assert stream is not None
    while chunk := await stream.read(MAX_STREAM_BYTES):
        capture.feed(chunk)


async def _settle(tasks: list[asyncio.Task[None]]) -> None:
    """Let the pipe tasks finish; a process that left the group may keep a pipe open."""
    _, pending = await asyncio.wait(tasks, timeout=DRAIN_SECONDS)
    for task in pending:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


def _kill_group(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


def _parse(line: bytes | None) -> Any:
    if line is None:
        return None
    try:
        return json.loads(line)
    except ValueError:
        return None


def _fail(
    run: ActionRun,
    config: RunCodeConfig,
    exit_code: int,
    timed_out: bool,
    oom_kills: int,
    stdout: _Capture,
    stderr: _Capture,
) -> NoReturn:
    """Classify an unsuccessful run. None is retried: with the same code and input and no
    network, a second attempt would end the same way and only burn the worker's time."""
    for name, capture in (("stdout", stdout), ("stderr", stderr)):
        if capture.size:
            # Redacted before it is cut, so that the cut never leaves part of a secret.
            text = redact(capture.tail.decode("utf-8", errors="replace"), run.secrets)
            tail = text[-LOG_TAIL_CHARS:]
            run.log(f"{name} (last {LOG_TAIL_CHARS} characters): {tail}", "warning")
    if timed_out:
        run.fail(
            "CodeTimeout",
            f"still running after {config.timeout_seconds:g}s; its process group was killed",
            retryable=False,
        )
    if exit_code == -signal.SIGXCPU:
        run.fail("CodeTimeout", "the program used up its CPU time limit", retryable=False)
    errors = bytes(stderr.head + stderr.tail).decode("utf-8", errors="replace")
    if oom_kills:
        run.fail(
            "CodeMemoryExceeded",
            f"its processes together went over memory_mb={config.memory_mb} (scratch files "
            f"count too): the kernel's OOM killer ended {oom_kills} of them "
            f"(exit code {exit_code})",
            retryable=False,
        )
    # A SIGKILL we did not send is most likely the kernel's OOM killer; the CPU hard limit
    # sends one only to a program that ignores SIGXCPU.
    if exit_code == -signal.SIGKILL or any(marker in errors for marker in MEMORY_MARKERS):
        run.fail(
            "CodeMemoryExceeded",
            f"the program ran out of memory (memory_mb={config.memory_mb}, exit code {exit_code})",
            retryable=False,
        )
    reason = f"killed by {_signal_name(-exit_code)}" if exit_code < 0 else f"exit code {exit_code}"
    lines = stderr.tail.decode("utf-8", errors="replace").strip().splitlines()
    raise ActionFailure(
        "CodeFailed",
        f"the program failed ({reason})",
        retryable=False,
        quote=lines[-1] if lines else "nothing on stderr",
    )


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"
