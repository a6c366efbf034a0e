"""What run_code's sandbox bounds for the program as a whole (scratch, memory, processes)
and what it keeps out of its reach (pid 1, keyrings, kernel interfaces, /dev), with real
Python and node programs, with and without a cgroup; who the program is for each kind of
worker; the removal of a run's cgroup; and the sweep of leftover run folders at a worker's
start."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import json
import mmap
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio.client import Client
from temporalio.exceptions import ApplicationError

from activities import _cgroups, _sandbox, run_code
from schema.settings import Settings
from tests.activities.test_run_code import _action, _result
from tests.fixtures.actions import ActionHarness, failure_of
from worker import build_workers

MiB = 1024 * 1024
MACHINE = os.uname().machine
# The system calls the probes make, by machine (the test's own table, not the filter's).
SYSCALLS = {
    "x86_64": {
        "keyctl": 250,
        "add_key": 248,
        "request_key": 249,
        "ptrace": 101,
        "unshare": 272,
        "setns": 308,
        "mount": 165,
        "bpf": 321,
        "perf_event_open": 298,
        "userfaultfd": 323,
        "io_uring_setup": 425,
        "process_vm_readv": 310,
        "kcmp": 312,
        "clone": 56,
        "clone3": 435,
        "personality": 135,
        "socket": 41,
    },
    "aarch64": {
        "keyctl": 219,
        "add_key": 217,
        "request_key": 218,
        "ptrace": 117,
        "unshare": 97,
        "setns": 268,
        "mount": 40,
        "bpf": 280,
        "perf_event_open": 241,
        "userfaultfd": 282,
        "io_uring_setup": 425,
        "process_vm_readv": 270,
        "kcmp": 272,
        "clone": 220,
        "clone3": 435,
        "personality": 92,
        "socket": 198,
    },
}


# A program that says it is ready (a file in its working directory) and then waits for the
# test's go (a file the test puts there, through /proc/<pid>/cwd), at most a minute.
READY_THEN_WAIT = """
import os, time
open('ready', 'w').close()
deadline = time.monotonic() + 60
while not os.path.exists('go') and time.monotonic() < deadline:
    time.sleep(0.02)
"""


async def _ready(marker: str) -> tuple[Path, int]:
    """The run folder and program pid of the run whose program holds ``marker``, once the
    program is ready (see READY_THEN_WAIT)."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        for folder in Path(tempfile.gettempdir()).glob("cronpilot-code-*"):
            program = folder / "program.py"
            try:
                if marker not in program.read_text():
                    continue
            except OSError:
                continue
            for pid in _running(str(program)):
                if os.path.exists(f"/proc/{pid}/cwd/ready"):
                    return folder, pid
        await asyncio.sleep(0.02)
    raise AssertionError("the program never said it was ready")


def _running(argument: str) -> Iterator[int]:
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if argument.encode() in (entry / "cmdline").read_bytes().split(b"\0"):
                    yield int(entry.name)
            except OSError:
                continue


def _go(pid: int) -> None:
    Path(f"/proc/{pid}/cwd/go").touch()


def _mib_available() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) // 1024
    return 0


@pytest.fixture
def without_cgroup(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """As on a machine whose kernel offers no cgroup (an empty /proc/self/cgroup), such as
    the compose file's worker: runs fall back to their per-process limits."""
    empty = tmp_path / "cgroup"
    empty.write_text("")
    monkeypatch.setattr("activities._cgroups.PROC_CGROUP", empty)


def _bytes_under(folder: Path) -> int:
    total = 0
    for directory, _, names in os.walk(folder):
        for name in names:
            try:
                total += os.lstat(os.path.join(directory, name)).st_size
            except OSError:
                continue
    return total


async def test_scratch_is_one_bounded_tmpfs_off_the_host_disk(harness: ActionHarness) -> None:
    """25 files of 10 MiB: the writes fail once the scratch (working directory, /tmp and
    /dev/shm together) is full, and none of it is on the host's disk."""
    marker = uuid.uuid4().hex
    code = (
        f"# {marker}\n"
        "import errno, json, os\n"
        "written, error = 0, None\n"
        "try:\n"
        "    for i in range(25):\n"
        "        with open(f'big-{i}.bin', 'wb') as f:\n"
        "            f.write(b'x' * (10 * 1024 * 1024))\n"
        "        written += 1\n"
        "except OSError as e:\n"
        "    error = e.errno\n"
        "try:\n"
        "    with open('/tmp/more.bin', 'wb') as f:\n"
        "        f.write(b'x' * (1024 * 1024))\n"
        "    tmp_error = None\n"
        "except OSError as e:\n"
        "    tmp_error = e.errno\n"
        "mounts = {}\n"
        "for line in open('/proc/self/mountinfo'):\n"
        "    fields, _, rest = line.partition(' - ')\n"
        "    mounts[fields.split()[4]] = rest.split()[0]\n"
        "cwd = os.getcwd()\n"
        "kind = mounts[max((m for m in mounts if cwd.startswith(m)), key=len)]\n"
        "devices = {os.stat(p).st_dev for p in ('.', '/tmp', '/dev/shm')}\n"
        f"{READY_THEN_WAIT}\n"
        "print(json.dumps({'written': written, 'error': error, 'tmp_error': tmp_error,\n"
        "                  'kind': kind, 'devices': len(devices)}))\n"
    )
    run = asyncio.create_task(_result(harness, code))
    try:
        folder, pid = await _ready(marker)
        try:
            on_host = _bytes_under(folder)
            held = sum(entry.stat().st_size for entry in Path(f"/proc/{pid}/cwd").iterdir())
        finally:
            _go(pid)
    finally:
        result = await run
    probe = result["output"]
    assert probe["written"] < 25 and probe["error"] in (errno.ENOSPC, errno.ENOMEM), probe
    assert probe["written"] * 10 <= 128, "the scratch is 128 MiB at most"
    assert probe["tmp_error"] in (errno.ENOSPC, errno.ENOMEM), "/tmp shares the cap"
    assert probe["kind"] == "tmpfs" and probe["devices"] == 1, probe
    assert held >= probe["written"] * 10 * MiB, "the program's files were there"
    assert on_host < MiB, f"{on_host} bytes of the run's files were on the host's disk"


def _memory_cgroup_missing() -> str | None:
    """Why this machine gives the worker no memory cgroup to make children in, if it does
    not (checked here on its own, not with the code under test)."""
    if os.geteuid() != 0:
        return "a non-root worker has a memory cgroup only when one is delegated to it"
    lines = Path("/proc/self/cgroup").read_text().splitlines()
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if "memory" in controllers.split(","):
            directory = Path("/sys/fs/cgroup/memory" + path)
            if os.access(directory, os.W_OK):
                return None
    unified = Path("/sys/fs/cgroup/cgroup.controllers")
    if unified.exists() and "memory" in unified.read_text().split():
        return None
    return "no writable memory cgroup on this machine"


def _run_cgroups() -> set[str]:
    """Run cgroups beside this process's memory cgroup (v1) or in its cgroup (v2)."""
    found = set()
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        for directory in (Path("/sys/fs/cgroup/memory" + path), Path("/sys/fs/cgroup" + path)):
            if "memory" in controllers.split(",") or controllers == "":
                found |= {p.name for p in directory.glob("cronpilot-code-*")}
    return found


# Each child holds 200 MiB (every page touched) until the parent ends it; the parent
# starts the next only while the machine has memory to spare (else it says it ran short),
# and counts those that hold their memory together at the end.
FORKS = """
import json, os, select, signal, time
MiB = 1024 * 1024
def available_mib():
    for line in open('/proc/meminfo'):
        if line.startswith('MemAvailable:'):
            return int(line.split()[1]) // 1024
    return 0
held, children, short = 0, [], False
r, w = os.pipe()
for _ in range(6):
    if available_mib() < 1024:
        short = True
        break
    pid = os.fork()
    if pid == 0:
        block = bytearray(200 * MiB)
        for at in range(0, len(block), 4096):
            block[at] = 1
        os.write(w, b'1')
        time.sleep(120)
        os._exit(0)
    children.append(pid)
    while True:
        if select.select([r], [], [], 0.05)[0]:
            os.read(r, 1)
            held += 1
            break
        if os.waitpid(pid, os.WNOHANG)[0]:
            break
together = 0
for pid in children:
    try:
        together += os.waitpid(pid, os.WNOHANG)[0] == 0
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    except (ProcessLookupError, ChildProcessError):
        pass
print(json.dumps({'held': held, 'together': together, 'short': short}))
"""


async def test_memory_mb_bounds_the_whole_process_tree(harness: ActionHarness) -> None:
    """6 forks of 200 MiB each under memory_mb=256: the tree cannot hold them together."""
    missing = _memory_cgroup_missing()
    if missing:
        pytest.skip(missing)
    if _mib_available() < 2048:
        pytest.skip("needs 2 GiB available: the forks must have room to go over memory_mb")
    before = _run_cgroups()
    try:
        outcome = await harness.run(_action(FORKS, memory_mb=256), handler=run_code.execute)
    except ApplicationError as error:
        assert (error.type, error.non_retryable) == ("CodeMemoryExceeded", True), error
    else:
        probe = outcome.result["output"]
        if probe["short"]:
            pytest.skip(f"the machine ran short of memory after {probe['held']} forks")
        assert probe["held"] >= 1, probe
        assert probe["together"] <= 1, f"{probe['together']} forks of 200 MiB held together"
    assert _run_cgroups() <= before, "the run's cgroup was removed"
    tiny = await _result(harness, "print(1)")
    assert tiny["memory_isolated"] is True


@pytest.mark.usefixtures("without_cgroup")
async def test_without_a_cgroup_memory_mb_bounds_each_process(harness: ActionHarness) -> None:
    """Without a cgroup the program still runs, with per-process limits, and its result and
    log say so."""
    outcome = await harness.run(_action("print(1)"), handler=run_code.execute)
    assert outcome.result["exit_code"] == 0 and outcome.result["memory_isolated"] is False
    assert any("not all of them together" in entry.message for entry in outcome.logs)
    failure = await failure_of(
        harness,
        _action("data = bytearray(1024 ** 3)", memory_mb=64),
        handler=run_code.execute,
    )
    assert failure.type == "CodeMemoryExceeded"


# Memory that the address-space limit does not count: anonymous files (memfd), System V
# shared memory (which outlives its process in the program's IPC namespace), semaphores and
# message queues, socket buffers grown past the system's default, and the buffers behind
# any number of descriptors. Where nothing stops them, the program holds 200 MiB of memfd
# and 128 MiB of shared memory under memory_mb=64.
OUTSIDE_THE_ADDRESS_SPACE = """
import ctypes, json, os, resource, socket
from multiprocessing import shared_memory
MiB = 1024 * 1024
IPC_PRIVATE, IPC_CREAT_0600 = 0, 0o1600
libc = ctypes.CDLL(None, use_errno=True)
libc.shmat.restype = ctypes.c_void_p
def errno_of(result):
    return ctypes.get_errno() if result < 0 else None
def memfd():
    held = 0
    try:
        for i in range(20):
            fd = os.memfd_create(f'm{i}')
            for _ in range(10):
                os.write(fd, b'x' * MiB)
                held += 1
    except OSError as error:
        return [held, error.errno]
    return [held, None]
def sysv_shm():
    held = 0
    for _ in range(8):
        segment = libc.shmget(IPC_PRIVATE, 16 * MiB, IPC_CREAT_0600)
        if segment < 0:
            return [held, ctypes.get_errno()]
        address = libc.shmat(segment, None, 0)
        if address is None or address == ctypes.c_void_p(-1).value:
            return [held, ctypes.get_errno()]
        ctypes.memset(address, 1, 16 * MiB)
        libc.shmdt(ctypes.c_void_p(address))
        held += 16
    return [held, None]
out = {'nofile': resource.getrlimit(resource.RLIMIT_NOFILE), 'memfd': memfd(),
       'shm': sysv_shm(), 'sem': errno_of(libc.semget(IPC_PRIVATE, 1, IPC_CREAT_0600)),
       'msg': errno_of(libc.msgget(IPC_PRIVATE, IPC_CREAT_0600))}
left, right = socket.socketpair()
try:
    left.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 64 * MiB)
    out['sndbuf'] = None
except OSError as error:
    out['sndbuf'] = error.errno
opened, out['files'] = [], None
try:
    for _ in range(2000):
        opened.append(os.dup(0))
except OSError as error:
    out['files'] = error.errno
out['opened'] = len(opened)
for fd in opened:
    os.close(fd)
posix = shared_memory.SharedMemory(create=True, size=MiB)
out['posix_shm_on_scratch'] = os.stat(f'/dev/shm/{posix.name}').st_dev == os.stat('.').st_dev
posix.close()
posix.unlink()
print(json.dumps(out))
"""


@pytest.mark.usefixtures("without_cgroup")
async def test_without_a_cgroup_memory_outside_the_address_space_is_refused(
    harness: ActionHarness,
) -> None:
    """Without a cgroup only per-process limits bound memory, and the address-space limit
    does not count memfd, System V IPC or kernel buffers: those are refused, and the open
    files limited, so that memory_mb bounds each process as the README says. POSIX shared
    memory is a file in /dev/shm, on the scratch."""
    if _mib_available() < 1024:
        pytest.skip("needs 1 GiB available: without these limits the probe holds 330 MiB")
    result = await _result(harness, OUTSIDE_THE_ADDRESS_SPACE, memory_mb=64)
    probe = result["output"]
    assert result["memory_isolated"] is False
    assert probe["memfd"] == [0, errno.ENOSYS], probe
    assert probe["shm"] == [0, errno.ENOSYS], probe
    assert probe["sem"] == probe["msg"] == errno.ENOSYS, probe
    assert probe["sndbuf"] == errno.EPERM, probe
    limit = run_code.MAX_OPEN_FILES
    assert probe["nofile"] == [limit, limit], probe
    assert probe["files"] == errno.EMFILE and probe["opened"] < limit, probe
    assert probe["posix_shm_on_scratch"] is True


FORK_150 = """
import json, os
r, w = os.pipe()
children, error = [], None
try:
    for _ in range(150):
        pid = os.fork()
        if pid == 0:
            os.close(w)
            os.read(r, 1)
            os._exit(0)
        children.append(pid)
except OSError as e:
    error = e.errno
os.close(w)
for pid in children:
    os.waitpid(pid, 0)
status = dict(line.split(':', 1) for line in open('/proc/self/status'))
print(json.dumps({'forks': len(children), 'error': error, 'uid': os.getuid(),
                  'uid_map': open('/proc/self/uid_map').read().split(),
                  'capabilities': int(status['CapEff'], 16)}))
"""


def _outer_uid(probe: dict[str, Any]) -> int:
    """The program's uid in its parent namespace (the worker's), from its uid_map."""
    uid_map = [int(field) for field in probe["uid_map"]]
    uid = int(probe["uid"])
    return next(
        uid_map[i + 1] + uid - uid_map[i]
        for i in range(0, len(uid_map), 3)
        if uid_map[i] <= uid < uid_map[i] + uid_map[i + 2]
    )


@pytest.mark.parametrize("cgroup", [True, False], ids=["with-a-cgroup", "without-a-cgroup"])
async def test_the_process_limit_holds_whoever_runs_the_worker(
    harness: ActionHarness, request: pytest.FixtureRequest, cgroup: bool
) -> None:
    """150 forks: refused beyond the limit, a root worker's programs included. Where the
    run has a cgroup its pids.max refuses them first; without one (the compose file's
    worker) only RLIMIT_NPROC does, which the kernel never enforces for the host's root."""
    if not cgroup:
        request.getfixturevalue("without_cgroup")
    result = await _result(harness, FORK_150)
    probe = result["output"]
    assert probe["forks"] < run_code.MAX_PROCESSES, probe["forks"]
    assert probe["error"] == errno.EAGAIN, probe
    assert probe["capabilities"] == 0
    # The program's user on the host is never root (for whom the kernel enforces nothing).
    assert _outer_uid(probe) != 0
    if not cgroup:
        assert result["memory_isolated"] is False


# Runs its arguments (a Python command line) as root of a new user namespace whose uid and
# gid maps are its first argument, as a container runtime would: the test, root on the
# host, writes the maps. Exit code 3: the kernel refused the namespace.
IN_USER_NAMESPACE = """
import ctypes, os, sys
id_map, argv = sys.argv[1], sys.argv[2:]
ready_r, ready_w = os.pipe()
go_r, go_w = os.pipe()
child = os.fork()
if child == 0:
    os.close(ready_r)
    if ctypes.CDLL(None, use_errno=True).unshare(0x10000000) != 0:
        os._exit(3)
    os.write(ready_w, b'1')
    os.read(go_r, 1)
    os.execv(sys.executable, [sys.executable, *argv])
os.close(ready_w)
if os.read(ready_r, 1) == b'1':
    for name in ('uid_map', 'gid_map'):
        with open(f'/proc/{child}/{name}', 'w') as f:
            f.write(id_map)
    os.write(go_w, b'1')
sys.exit(os.waitstatus_to_exitcode(os.waitpid(child, 0)[1]))
"""
# In that namespace: the program on stdin, in the sandbox (no cgroup), as run_code starts it.
SANDBOX_IN_NAMESPACE = """
import resource, shutil, subprocess, sys, tempfile
from pathlib import Path
from activities import _sandbox
code = sys.stdin.read()
base = Path(tempfile.mkdtemp(prefix='cronpilot-test-userns-'))
try:
    program = base / 'program.py'
    program.write_text(code)
    program.chmod(0o644)
    work = base / 'work'
    work.mkdir()
    layout = _sandbox.layout_for(base, program, work, [Path.home()])
    limits = [(resource.RLIMIT_NPROC, 64, 64), (resource.RLIMIT_CORE, 0, 0)]
    done = subprocess.run(
        [sys.executable, '-I', '-B', str(program)], cwd=work, env={'PATH': '/usr/bin:/bin'},
        capture_output=True, text=True, timeout=60, start_new_session=True,
        preexec_fn=_sandbox.enter(layout, limits, scratch_bytes=16 * 1024 * 1024))
finally:
    shutil.rmtree(base, ignore_errors=True)
sys.stdout.write(done.stdout)
sys.stderr.write(done.stderr + (_sandbox.error_of(base) or ''))
sys.exit(done.returncode)
"""


def _in_user_namespace(id_map: str, code: str) -> dict[str, Any]:
    """The JSON the sandboxed program ``code`` printed last, run by a root worker in a
    user namespace that maps ``id_map`` (its uids and gids alike)."""
    if os.geteuid() != 0:
        pytest.skip("mapping many ids into a user namespace takes root (or newuidmap)")
    repository = Path(_sandbox.__file__).resolve().parents[1]
    done = subprocess.run(
        [sys.executable, "-c", IN_USER_NAMESPACE, id_map, "-c", SANDBOX_IN_NAMESPACE],
        input=code,
        env={**os.environ, "PYTHONPATH": str(repository)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    if done.returncode == 3:
        pytest.skip("the kernel refused a user namespace")
    assert done.returncode == 0, done.stderr
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


@pytest.mark.parametrize(
    ("uid_map", "gid_map", "spare"),
    [
        ("0 0 4294967295", "0 0 4294967295", _sandbox.NOBODY),
        ("0 100000 65536", "0 100000 65536", _sandbox.NOBODY),
        ("0 100000 1000", "0 100000 1000", 999),
        ("0 1000 1 1 100000 65536", "0 1000 1 1 100000 65536", _sandbox.NOBODY),
        ("0 100000 70000", "0 100000 1000", 999),
        ("0 1000 1", "0 1000 1", None),
        ("", "", None),
    ],
)
def test_the_id_a_root_worker_maps_its_programs_to(
    uid_map: str, gid_map: str, spare: int | None
) -> None:
    """nobody where the worker's namespace maps it as a user and a group, else the highest
    id it maps as both; none where it maps only its root."""
    assert _sandbox.spare_id(uid_map.split(), gid_map.split()) == spare


def test_a_root_worker_in_a_user_namespaced_container() -> None:
    """A root worker in a container whose user namespace maps 65,536 ids (Docker's
    userns-remap, rootless runtimes): the program is nobody in its namespace and in the
    container's, not root, without capabilities, and its process limit holds without a
    cgroup."""
    probe = _in_user_namespace("0 0 65536", FORK_150)
    assert probe["uid"] == _sandbox.NOBODY and _outer_uid(probe) == _sandbox.NOBODY, probe
    assert probe["capabilities"] == 0
    assert probe["forks"] < run_code.MAX_PROCESSES and probe["error"] == errno.EAGAIN, probe


def test_a_root_worker_whose_namespace_maps_only_its_root() -> None:
    """A root worker whose user namespace maps only its root can map no other id: the
    program is uid 0 of its own namespace, the worker's own user, without capabilities.
    (Here that user is the host's root, so that this test's Python is in reach, and the
    kernel enforces no process limit for the host's root: only a pids cgroup would.)"""
    probe = _in_user_namespace("0 0 1", FORK_150)
    assert probe["uid"] == 0 and _outer_uid(probe) == 0, probe
    assert probe["capabilities"] == 0


DEV_PROBE = """
import json, os
out = {'uid': os.getuid(), 'dev_owner': os.stat('/dev').st_uid, 'made': 0}
try:
    for i in range(1000):
        open(f'/dev/junk-{i}', 'w').close()
        out['made'] += 1
    out['file'] = None
except OSError as error:
    out['file'] = error.errno
for name, make in (('directory', lambda: os.mkdir('/dev/junk')),
                   ('symlink', lambda: os.symlink('null', '/dev/junk-link'))):
    try:
        make()
        out[name] = None
    except OSError as error:
        out[name] = error.errno
out['inodes'] = os.statvfs('/dev').f_files
with open('/dev/null', 'w') as null:
    null.write('still a device')
out['urandom'] = len(open('/dev/urandom', 'rb').read(8))
with open('/dev/shm/note', 'w') as note:
    out['shm'] = note.write('the scratch')
print(json.dumps(out))
"""


@pytest.mark.parametrize("unprivileged", [False, True], ids=["this-worker", "unprivileged"])
async def test_nothing_can_be_made_in_dev(
    harness: ActionHarness, monkeypatch: pytest.MonkeyPatch, unprivileged: bool
) -> None:
    """/dev is read-only once built, with a few inodes: no file appears there, not even
    where the program's user is the one that built it (an unprivileged worker maps only
    its own uid, for the sandbox's pid 1 and the program alike), so the scratch's quota is
    the only place to write. Its devices and /dev/shm still work."""
    if unprivileged:
        monkeypatch.setattr(
            _sandbox,
            "identity",
            lambda: _sandbox.Identity(os.getuid(), os.getgid(), per_run=False),
        )
    probe = (await _result(harness, DEV_PROBE))["output"]
    if unprivileged:
        assert probe["uid"] == probe["dev_owner"], "the program's user owns /dev"
    assert probe["made"] == 0, probe
    assert probe["file"] == probe["directory"] == probe["symlink"] == errno.EROFS, probe
    assert probe["inodes"] <= 64, probe
    assert probe["urandom"] == 8 and probe["shm"] == len("the scratch")


async def test_pid_1_does_not_show_the_worker(harness: ActionHarness) -> None:
    """pid 1 of the sandbox is a copy of the worker: its command line, environment and
    files are out of sight."""
    code = (
        "import json, os\n"
        "seen = {}\n"
        "for name in ('cmdline', 'environ', 'status', 'root'):\n"
        "    path = f'/proc/1/{name}'\n"
        "    try:\n"
        "        seen[name] = os.listdir(path) if name == 'root' else open(path, 'rb')"
        ".read().decode(errors='replace')\n"
        "    except OSError as error:\n"
        "        seen[name] = type(error).__name__\n"
        "seen['pids'] = sorted(int(p) for p in os.listdir('/proc') if p.isdigit())\n"
        "print(json.dumps(seen))\n"
    )
    seen = (await _result(harness, code))["output"]
    worker = Path("/proc/self/cmdline").read_bytes().split(b"\0")[0].decode()
    for name in ("cmdline", "environ", "status", "root"):
        assert seen[name] in ("FileNotFoundError", "PermissionError"), (name, seen[name])
        assert worker not in str(seen[name])
    assert 1 not in seen["pids"] and seen["pids"], seen["pids"]


def _syscalls() -> dict[str, int]:
    if MACHINE not in SYSCALLS:
        pytest.skip(f"no system call table for {MACHINE} in this test")
    return SYSCALLS[MACHINE]


# Each probe calls one system call through libc's syscall() and reports (result, errno).
KERNEL_PROBES = """
import ctypes, json, os, socket, sys
nr = json.load(sys.stdin)
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
def call(name, *args):
    ctypes.set_errno(0)
    result = libc.syscall(nr[name], *args)
    return [result, ctypes.get_errno()]
buffer = ctypes.create_string_buffer(64)
iov = (ctypes.c_void_p * 2)(ctypes.addressof(buffer), 8)
perf = bytearray(64)
perf[0:4] = (1).to_bytes(4, 'little')      # PERF_TYPE_SOFTWARE
perf[4:8] = (64).to_bytes(4, 'little')     # size
perf[8:16] = (1).to_bytes(8, 'little')     # PERF_COUNT_SW_TASK_CLOCK
perf[40:48] = ((1 << 5) | (1 << 6)).to_bytes(8, 'little')  # exclude kernel and hypervisor
perf_attr = ctypes.create_string_buffer(bytes(perf), 64)
uring = ctypes.create_string_buffer(120)
ns = os.open('/proc/self/ns/uts', os.O_RDONLY)
probes = {
    'keyctl session keyring': call('keyctl', 0, ctypes.c_long(-3), 0),
    'add_key': call('add_key', b'user', b'cronpilot', b'secret', 6, ctypes.c_long(-2)),
    'request_key': call('request_key', b'user', b'cronpilot', None, 0),
    'unshare user': call('unshare', 0x10000000),
    'setns': call('setns', ns, 0),
    'mount': call('mount', b'none', b'/tmp', b'tmpfs', 0, None),
    'bpf': call('bpf', 0, None, 0),
    'perf_event_open': call('perf_event_open', perf_attr, 0, -1, -1, 0),
    'userfaultfd': call('userfaultfd', 1),
    'io_uring_setup': call('io_uring_setup', 1, uring),
    'process_vm_readv': call('process_vm_readv', os.getpid(), iov, 1, iov, 1, 0),
    'kcmp': call('kcmp', os.getpid(), os.getpid(), 0, 0, 0),
    'clone3': call('clone3', None, 0),
    'personality no aslr': call('personality', 0x0040000),
    'personality query': call('personality', 0xFFFFFFFF),
    'vsock': call('socket', 40, 1, 0),
}
# Traced by its parent, a process stops at its next signal: only a child tries.
r, w = os.pipe()
child = os.fork()
if child == 0:
    os.write(w, json.dumps(call('ptrace', 0, 0, 0, 0)).encode())
    os._exit(0)
os.waitpid(child, 0)
probes['ptrace traceme'] = json.loads(os.read(r, 100))
created = call('clone', 0x10000000 | 0x40000000 | 17, 0, 0, 0, 0)
if created[0] == 0:
    os._exit(0)
if created[0] > 0:
    os.waitpid(created[0], 0)
probes['clone with namespaces'] = created
plain = os.fork()
if plain == 0:
    os._exit(7)
probes['plain fork'] = [os.WEXITSTATUS(os.waitpid(plain, 0)[1]), 0]
print(json.dumps(probes))
"""


async def test_keyrings_and_kernel_interfaces_are_refused(harness: ActionHarness) -> None:
    """The session keyring and the kernel's attack surface that no program needs are out
    of reach (seccomp), whatever the namespaces would allow; a plain fork still works."""
    probes = (await _result(harness, KERNEL_PROBES, input=_syscalls()))["output"]
    refused = {
        "keyctl session keyring": errno.EPERM,
        "add_key": errno.EPERM,
        "request_key": errno.EPERM,
        "ptrace traceme": errno.EPERM,
        "unshare user": errno.EPERM,
        "setns": errno.EPERM,
        "mount": errno.EPERM,
        "bpf": errno.EPERM,
        "perf_event_open": errno.EPERM,
        "userfaultfd": errno.EPERM,
        "io_uring_setup": errno.ENOSYS,
        "process_vm_readv": errno.EPERM,
        "kcmp": errno.EPERM,
        "clone3": errno.ENOSYS,
        "personality no aslr": errno.EPERM,
        "vsock": errno.EPERM,
        "clone with namespaces": errno.EPERM,
    }
    got = {name: probes[name] for name in refused}
    assert got == {name: [-1, number] for name, number in refused.items()}, got
    assert probes["personality query"][0] >= 0 and probes["plain fork"] == [7, 0]


async def test_a_call_through_another_abi_kills_the_program(harness: ActionHarness) -> None:
    """A 32-bit system call (int 0x80) from an x86_64 program: its numbers are not the
    filter's, so the kernel kills the process rather than run it. (x32 calls, which a
    kernel without x32 refuses on its own, are checked on the filter's verdicts, in
    test_seccomp.py.)"""
    if MACHINE != "x86_64":
        pytest.skip("the 32-bit ABI probe is x86_64 machine code")
    code = (
        "import ctypes, json, mmap, os\n"
        "child = os.fork()\n"
        "if child == 0:\n"
        "    # mov eax, 20 (getpid, i386); int 0x80; ret\n"
        "    code = bytes([0xB8, 20, 0, 0, 0, 0xCD, 0x80, 0xC3])\n"
        "    page = mmap.mmap(-1, mmap.PAGESIZE,\n"
        "                     prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)\n"
        "    page.write(code)\n"
        "    address = ctypes.addressof(ctypes.c_char.from_buffer(page))\n"
        "    ctypes.CFUNCTYPE(ctypes.c_int)(address)()\n"
        "    os._exit(0)\n"
        "_, status = os.waitpid(child, 0)\n"
        "print(json.dumps({'signal': os.WTERMSIG(status) if os.WIFSIGNALED(status) else None}))\n"
    )
    probe = (await _result(harness, code))["output"]
    assert probe["signal"] == signal.SIGSYS, probe


async def test_ordinary_python_programs_still_work(harness: ActionHarness) -> None:
    code = (
        "import asyncio, getpass, json, multiprocessing, os, socket, subprocess, threading\n"
        "def square(n):\n"
        "    return n * n\n"
        "async def echo():\n"
        "    left, right = socket.socketpair()\n"
        "    reader, writer = await asyncio.open_connection(sock=left)\n"
        "    right.sendall(b'ping\\n')\n"
        "    line = await reader.readline()\n"
        "    writer.close()\n"
        "    right.close()\n"
        "    return line.decode().strip()\n"
        "if __name__ == '__main__':\n"
        "    out = {}\n"
        "    seen = []\n"
        "    threads = [threading.Thread(target=seen.append, args=(i,)) for i in range(8)]\n"
        "    for t in threads: t.start()\n"
        "    for t in threads: t.join()\n"
        "    out['threads'] = sorted(seen)\n"
        "    shell = subprocess.run('echo out; echo err >/dev/stderr', shell=True,\n"
        "                           capture_output=True, text=True)\n"
        "    out['subprocess'] = [shell.stdout, shell.stderr]\n"
        "    spawned = os.posix_spawn('/bin/sh', ['sh', '-c', 'exit 3'], {})\n"
        "    out['posix_spawn'] = os.waitstatus_to_exitcode(os.waitpid(spawned, 0)[1])\n"
        "    for method in ('fork', 'spawn', 'forkserver'):\n"
        "        with multiprocessing.get_context(method).Pool(2) as pool:\n"
        "            out[method] = pool.map(square, [1, 2, 3])\n"
        "    lock = multiprocessing.Lock()\n"
        "    with lock:\n"
        "        out['semaphore'] = True\n"
        "    out['asyncio'] = asyncio.run(echo())\n"
        "    try:\n"
        "        socket.create_connection(('192.0.2.1', 80), timeout=5)\n"
        "        out['network'] = 'connected'\n"
        "    except OSError as error:\n"
        "        out['network'] = type(error).__name__\n"
        "    open('/dev/stdout', 'w').write('reopened\\n')\n"
        "    out['user'] = getpass.getuser()\n"
        "    print(json.dumps(out))\n"
    )
    result = await _result(harness, code, timeout_seconds=60)
    out = result["output"]
    assert out["threads"] == list(range(8))
    assert out["subprocess"] == ["out\n", "err\n"] and out["posix_spawn"] == 3
    assert out["fork"] == out["spawn"] == out["forkserver"] == [1, 4, 9]
    assert out["semaphore"] is True and out["asyncio"] == "ping"
    assert out["network"] != "connected" and "reopened" in result["stdout"]
    assert out["user"], "the program's user has a name"


async def test_ordinary_node_programs_still_work(harness: ActionHarness) -> None:
    code = """
const { execSync } = require('child_process');
const { Worker } = require('worker_threads');
const fs = require('fs');
const net = require('net');
const os = require('os');
(async () => {
  const out = {};
  out.exec = execSync('echo hi').toString();
  out.worker = await new Promise((resolve, reject) => {
    const worker = new Worker(
      'require("worker_threads").parentPort.postMessage(6 * 7)', { eval: true });
    worker.on('message', resolve);
    worker.on('error', reject);
  });
  await fs.promises.writeFile('notes.txt', 'kept');
  out.file = await fs.promises.readFile('notes.txt', 'utf8');
  out.user = os.userInfo().username;
  out.network = await new Promise((resolve) => {
    const socket = net.connect(80, '192.0.2.1');
    socket.on('connect', () => resolve('connected'));
    socket.on('error', (error) => resolve(error.code));
  });
  console.log(JSON.stringify(out));
})();
"""
    out = (await _result(harness, code, language="javascript", timeout_seconds=60))["output"]
    assert out["exec"] == "hi\n" and out["worker"] == 42 and out["file"] == "kept"
    assert out["user"] and out["network"] != "connected", out


def _leftover(directory: Path, name: str, *, lock: bool) -> Path:
    folder = directory / f"cronpilot-code-{name}"
    folder.mkdir(mode=0o700)
    (folder / "program.py").write_text("SECRET = 'rendered'\n")
    if lock:
        (folder / "lock").touch()
    return folder


async def test_a_starting_worker_sweeps_leftover_run_folders(
    temporal: Client,
    sessions: async_sessionmaker[AsyncSession],
    settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    """A killed worker's folders go (the rendered program may hold secrets); a live run's,
    whose lock is held, stays, and so does a recent folder made before runs took locks.
    Their cgroups are checked only where this machine has a writable cgroup v1 memory
    hierarchy (on cgroup v2, or without one, only the folders are)."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    run = uuid.uuid4().hex[:8]
    stale = _leftover(tmp_path, f"stale-{run}", lock=True)
    live = _leftover(tmp_path, f"live-{run}", lock=True)
    unlocked_old = _leftover(tmp_path, f"unlocked-old-{run}", lock=False)
    unlocked_new = _leftover(tmp_path, f"unlocked-new-{run}", lock=False)
    hours_ago = time.time() - 3 * 3600
    os.utime(unlocked_old, (hours_ago, hours_ago))
    groups = _v1_memory_cgroup()
    # The killed worker's run left its cgroup too (where this machine has cgroup v1).
    made = [groups / folder.name for folder in (stale, live)] if groups is not None else []
    for cgroup in made:
        cgroup.mkdir()
    held = os.open(live / "lock", os.O_RDWR)
    fcntl.flock(held, fcntl.LOCK_EX)
    try:
        queue = f"q{uuid.uuid4().hex[:8]}"
        chosen = settings.model_copy(update={"task_queue": queue, "worker_queues": "code"})
        _, deps = build_workers(temporal, sessions, chosen)
        await deps.close()
        left = [cgroup.name for cgroup in made if cgroup.exists()]
    finally:
        os.close(held)
        for cgroup in made:
            with contextlib.suppress(FileNotFoundError):
                cgroup.rmdir()
    assert not stale.exists() and not unlocked_old.exists()
    assert live.exists() and unlocked_new.exists()
    assert left == ([live.name] if made else []), "only the live run's cgroup stays"


def _v1_memory_cgroup() -> Path | None:
    """This process's cgroup v1 memory directory, if it may make children there."""
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        directory = Path("/sys/fs/cgroup/memory" + path)
        if "memory" in controllers.split(",") and os.access(directory, os.W_OK):
            return directory
    return None


async def test_the_sweep_leaves_a_live_runs_folder(
    harness: ActionHarness, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    marker = uuid.uuid4().hex
    code = f"# {marker}\n{READY_THEN_WAIT}\nprint(open(__file__).read().count('{marker}'))\n"
    run = asyncio.create_task(_result(harness, code))
    try:
        folder, pid = await _ready(marker)
        try:
            removed = run_code.remove_leftover_runs()
            kept = folder.exists() and (folder / "program.py").exists()
        finally:
            _go(pid)
    finally:
        result = await run
    assert folder.name not in removed and kept
    assert result["output"] == 2
    assert not folder.exists(), "the run removed its own folder"


def _serve(fifo: Path, first: str, stop: threading.Event) -> None:
    """Answer the first read of ``fifo`` with ``first`` and every later one with nothing."""
    answer = first.encode()
    while not stop.is_set():
        try:
            descriptor = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
        except OSError:  # no reader yet
            time.sleep(0.001)
            continue
        try:
            os.write(descriptor, answer)
        finally:
            os.close(descriptor)
        answer = b""
        time.sleep(0.005)


def test_removing_a_run_cgroup_never_signals_a_process_that_left_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A pid read from cgroup.procs may name another process by the time it is signalled
    (the member ended, and the pid went to a new process). Here cgroup.procs (a FIFO, as
    on cgroup v1: no cgroup.kill) lists a process on its first read only, as if it had
    left the cgroup just after: it is not signalled."""
    outsider = subprocess.Popen(["sleep", "60"])
    fake = tmp_path / "cronpilot-code-fake"
    fake.mkdir()
    os.mkfifo(fake / "cgroup.procs")
    stop = threading.Event()
    server = threading.Thread(
        target=_serve, args=(fake / "cgroup.procs", f"{outsider.pid}\n", stop)
    )
    server.start()
    monkeypatch.setattr(_cgroups, "REMOVE_SECONDS", 2.0)
    try:
        _cgroups.remove(_cgroups.RunGroup(1, (fake,), memory=True, pids=True))
        with contextlib.suppress(subprocess.TimeoutExpired):
            outsider.wait(timeout=0.2)
        alive = outsider.poll() is None
    finally:
        stop.set()
        server.join()
        outsider.kill()
        outsider.wait()
    assert alive, f"a process outside the cgroup was killed ({outsider.returncode})"


def test_removing_a_run_cgroup_kills_what_is_left_in_it() -> None:
    """A process left in a run's cgroup (cgroup.kill on v2; a pidfd per member on v1) is
    killed, and the cgroup removed."""
    group, reason = _cgroups.create(f"cronpilot-code-test-{uuid.uuid4().hex[:8]}", 64 * MiB, 8)
    if group is None:
        pytest.skip(f"no cgroup on this machine ({reason})")
    left = subprocess.Popen(["sleep", "60"], preexec_fn=_sandbox.plain([], group.procs))
    try:
        removed = _cgroups.remove(group)
        status = left.wait(timeout=5)
    finally:
        if left.poll() is None:
            left.kill()
            left.wait()
    assert removed and status == -signal.SIGKILL
    assert not any(directory.exists() for directory in group.directories)


async def test_the_headroom_covers_a_large_workers_page_tables(harness: ActionHarness) -> None:
    """The sandbox's first processes are forks of the worker: each has a copy of its page
    tables, charged to the run's cgroup. A worker whose page tables take 32 MiB (a sparse
    16 GiB mapping, one page touched in every 2 MiB) still leaves a small program its
    memory_mb."""
    missing = _memory_cgroup_missing()
    if missing:
        pytest.skip(missing)
    if _mib_available() < 1024:
        pytest.skip("needs 1 GiB available (32 MiB of page tables, copied twice)")
    size = 16 << 30
    flags = mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS | getattr(mmap, "MAP_NORESERVE", 0x4000)
    try:
        region = mmap.mmap(-1, size, flags=flags)
    except OSError as error:
        pytest.skip(f"no 16 GiB of address space to reserve ({error})")
    try:
        try:
            region.madvise(mmap.MADV_NOHUGEPAGE)  # a 4 KiB page per touch, never 2 MiB
        except (AttributeError, OSError) as error:
            pytest.skip(f"cannot keep huge pages out of the mapping ({error})")
        for offset in range(0, size, 2 * MiB):
            region[offset] = 1
        result = await _result(harness, "print(1)", memory_mb=32)
    finally:
        region.close()
    assert result["exit_code"] == 0 and result["memory_isolated"] is True
