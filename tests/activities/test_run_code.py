"""The run_code action, with real Python and node processes and a real loopback listener."""

from __future__ import annotations

import asyncio
import errno
import json
import os
import signal
import time
from pathlib import Path
from typing import Any

import pytest

from activities import run_code
from activities._sandbox import interpreter_paths
from tests.fixtures.actions import ActionHarness, failure_of

MiB = 1024 * 1024


def _action(code: str, language: str = "python", **config: Any) -> dict[str, Any]:
    return {"type": "run_code", "config": {"language": language, "code": code, **config}}


async def _result(harness: ActionHarness, code: str, **config: Any) -> dict[str, Any]:
    outcome = await harness.run(_action(code, **config), handler=run_code.execute)
    result: dict[str, Any] = outcome.result
    return result


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state not in ("Z", "X")


async def test_python_gets_its_input_on_stdin_and_returns_json_output(
    harness: ActionHarness,
) -> None:
    code = (
        "import json, sys\n"
        "data = json.load(sys.stdin)\n"
        "print('adding', len(data['numbers']), 'numbers')\n"
        "print('a warning', file=sys.stderr)\n"
        "print(json.dumps({'sum': sum(data['numbers']), 'name': data['name']}))\n"
    )
    result = await _result(harness, code, input={"numbers": [1, 2, 39], "name": "é"})
    assert result["exit_code"] == 0
    assert result["output"] == {"sum": 42, "name": "é"}
    assert result["stdout"].startswith("adding 3 numbers\n")
    assert result["stderr"] == "a warning\n"
    assert not result["stdout_truncated"] and not result["stderr_truncated"]
    assert result["network_isolated"] is True


async def test_javascript_gets_its_input_on_stdin_and_returns_json_output(
    harness: ActionHarness,
) -> None:
    code = (
        "const input = JSON.parse(require('fs').readFileSync(0, 'utf8'));\n"
        "console.error('working');\n"
        "console.log('not json');\n"
        "console.log(JSON.stringify({ doubled: input.n * 2, runtime: process.release.name }));\n"
    )
    result = await _result(harness, code, language="javascript", input={"n": 21})
    assert result["exit_code"] == 0
    assert result["output"] == {"doubled": 42, "runtime": "node"}
    assert result["stdout"].startswith("not json\n") and result["stderr"] == "working\n"


async def test_streams_are_capped_and_output_is_the_last_line_or_null(
    harness: ActionHarness,
) -> None:
    code = (
        "import json, sys\n"
        "sys.stderr.write('e' * 100_000)\n"
        "sys.stdout.write(('x' * 99 + '\\n') * 2_000)\n"
        "print(json.dumps([1, 2, 3]))\n"
    )
    result = await _result(harness, code)
    assert len(result["stdout"]) == len(result["stderr"]) == 64 * 1024
    assert result["stdout_truncated"] and result["stderr_truncated"]
    assert result["output"] == [1, 2, 3], "the last line survives the cap"
    plain = await _result(harness, "print('{\"not\": json}')\nprint()\n")
    assert plain["output"] is None and not plain["stdout_truncated"]


async def test_a_secret_printed_across_the_cap_leaves_no_part_of_itself(
    harness: ActionHarness,
) -> None:
    """stdout is kept to its first 64 KiB: a secret that the cut splits is masked as the
    start of a longer text, not left as a stub (``tok-sec``) a whole-text match misses."""
    secret = "tok-secret-value-0123456789"
    await harness.put_secret("TOKEN", secret)
    before = run_code.MAX_STREAM_BYTES - 7
    code = f"import sys\nsys.stdout.write('x' * {before} + '{{{{ secrets.TOKEN }}}}' + 'y' * 100)\n"
    result = await _result(harness, code)
    assert result["stdout_truncated"] is True
    assert secret[:7] not in result["stdout"] and secret[:4] not in result["stdout"]
    assert result["stdout"].startswith("x" * 1000)


async def test_a_failing_program_is_a_non_retryable_code_failed(harness: ActionHarness) -> None:
    failure = await failure_of(
        harness,
        _action("print('before')\nraise ValueError('boom')"),
        handler=run_code.execute,
        max_attempts=3,
    )
    assert (failure.type, failure.non_retryable) == ("CodeFailed", True)
    assert "exit code 1" in failure.message and "ValueError: boom" in failure.message
    js = await failure_of(
        harness,
        _action("console.error('bad input'); process.exit(3)", language="javascript"),
        handler=run_code.execute,
    )
    assert js.type == "CodeFailed" and "exit code 3" in js.message


def _marked(marker: str) -> list[int]:
    """Live processes on this machine whose command line holds ``marker``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            command = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if marker.encode() in command and _alive(int(entry.name)):
            found.append(int(entry.name))
    return found


async def _gone(marker: str) -> list[int]:
    deadline = time.monotonic() + 10
    while _marked(marker) and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    return _marked(marker)


async def test_a_timeout_kills_the_whole_process_group(harness: ActionHarness) -> None:
    marker = f"{60 + time.time() % 1:.6f}"  # a sleep length no other process uses
    code = (
        "import subprocess, sys, time\n"
        f"child = subprocess.Popen(['sleep', '{marker}'])\n"
        "print('started', flush=True)\n"
        "time.sleep(60)\n"
    )
    failure = await failure_of(harness, _action(code, timeout_seconds=2), handler=run_code.execute)
    assert (failure.type, failure.non_retryable) == ("CodeTimeout", True)
    assert await _gone(marker) == [], "the grandchild outlived the timeout"


async def test_background_processes_end_with_the_program(harness: ActionHarness) -> None:
    marker = f"{60 + time.time() % 1:.6f}"
    code = (
        "import subprocess\n"
        f"grouped = subprocess.Popen(['sleep', '{marker}'])\n"
        "# A new session escapes a process-group kill, not the end of the PID namespace.\n"
        f"escaped = subprocess.Popen(['sleep', '{marker}'], start_new_session=True)\n"
        "print('done')\n"
    )
    result = await _result(harness, code, timeout_seconds=30)
    try:
        assert result["exit_code"] == 0
        assert await _gone(marker) == [], "a background process outlived the program"
    finally:
        for pid in _marked(marker):
            os.kill(pid, signal.SIGKILL)


@pytest.mark.parametrize(
    ("language", "code"),
    [
        ("python", "data = bytearray(1024 ** 3)\nprint(len(data))"),
        ("javascript", "const a = []; for (;;) a.push(new Array(100000).fill(1.5));"),
        ("javascript", "console.log(Buffer.alloc(1024 ** 3).length);"),
    ],
)
async def test_exceeding_memory_mb_is_code_memory_exceeded(
    harness: ActionHarness, language: str, code: str
) -> None:
    failure = await failure_of(
        harness, _action(code, language=language, memory_mb=64), handler=run_code.execute
    )
    assert (failure.type, failure.non_retryable) == ("CodeMemoryExceeded", True)


async def test_the_program_has_no_network(harness: ActionHarness) -> None:
    accepted: list[str] = []

    async def on_connect(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append("connection")
        writer.close()

    server = await asyncio.start_server(on_connect, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    code = (
        "import json, socket, sys\n"
        "try:\n"
        "    socket.create_connection(('127.0.0.1', json.load(sys.stdin)), timeout=5).close()\n"
        "    print(json.dumps({'connected': True}))\n"
        "except OSError as error:\n"
        "    print(json.dumps({'connected': False, 'error': str(error)}))\n"
    )
    async with server:
        _, writer = await asyncio.open_connection("127.0.0.1", port)  # the listener works
        writer.close()
        await writer.wait_closed()
        result = await _result(harness, code, input=port)
    assert result["network_isolated"] is True
    assert result["output"]["connected"] is False, result["output"]
    assert accepted == ["connection"], "only the test's own connection arrived"


async def test_the_environment_is_scrubbed(
    harness: ActionHarness, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CRONPILOT_TEST_LEAK", "do-not-leak")
    code = "import json, os\nprint(json.dumps({'env': dict(os.environ), 'cwd': os.getcwd()}))"
    result = await _result(harness, code)
    env, cwd = result["output"]["env"], result["output"]["cwd"]
    assert "CRONPILOT_TEST_LEAK" not in env and "do-not-leak" not in json.dumps(env)
    assert set(env) <= {"PATH", "HOME", "LANG", "TMPDIR", "LC_CTYPE"}
    assert env["PATH"] == "/usr/bin:/bin"
    assert env["HOME"] == cwd != os.environ.get("HOME")


async def test_it_starts_in_an_empty_directory_that_is_removed_afterwards(
    harness: ActionHarness,
) -> None:
    code = (
        "import json, os\n"
        "before = os.listdir('.')\n"
        "open('notes.txt', 'w').write('scratch')\n"
        "print(json.dumps({'before': before, 'cwd': os.getcwd()}))\n"
    )
    first = await _result(harness, code)
    second = await _result(harness, code)
    assert first["output"]["before"] == second["output"]["before"] == []
    assert first["output"]["cwd"] != second["output"]["cwd"]
    assert not os.path.exists(first["output"]["cwd"])


async def test_files_larger_than_the_limit_cannot_be_written(harness: ActionHarness) -> None:
    code = (
        "import json, os\n"
        "try:\n"
        "    with open('big.bin', 'wb') as f:\n"
        "        for _ in range(50):\n"
        "            f.write(b'x' * 1024 * 1024)\n"
        "    print(json.dumps({'errno': None, 'size': os.path.getsize('big.bin')}))\n"
        "except OSError as error:\n"
        "    print(json.dumps({'errno': error.errno, 'size': os.path.getsize('big.bin')}))\n"
    )
    result = await _result(harness, code)
    assert result["output"]["errno"] == errno.EFBIG
    assert result["output"]["size"] <= 10 * MiB


async def test_disabled_run_code_is_a_non_retryable_failure(harness: ActionHarness) -> None:
    failure = await failure_of(
        harness, _action("print(1)"), handler=run_code.execute, run_code_enabled=False
    )
    assert (failure.type, failure.non_retryable) == ("CodeExecutionDisabled", True)
    assert "disabled" in failure.message


async def test_javascript_without_node_is_code_language_unavailable(
    harness: ActionHarness, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    failure = await failure_of(
        harness, _action("console.log(1)", language="javascript"), handler=run_code.execute
    )
    assert (failure.type, failure.non_retryable) == ("CodeLanguageUnavailable", True)


PROBE = r"""
import json, os, sys
found = {}
for path in json.load(sys.stdin)["paths"]:
    try:
        with open(path, "rb") as f:
            found[path] = "read %d bytes" % len(f.read())
    except OSError as error:
        found[path] = type(error).__name__
environs = []
for pid in os.listdir("/proc") if os.path.isdir("/proc") else []:
    if pid.isdigit():
        try:
            environs.append(open(f"/proc/{pid}/environ", "rb").read().decode(errors="replace"))
        except OSError:
            pass
status = open("/proc/self/status").read() if os.path.exists("/proc/self/status") else ""
caps = {l.split(":")[0]: l.split()[1] for l in status.splitlines() if l.startswith("Cap")}
try:
    open("/usr/cronpilot-probe", "w")
    wrote = True
except OSError as error:
    wrote = type(error).__name__
print(json.dumps({"files": found, "environs": environs, "caps": caps, "wrote": wrote,
                  "pids": sorted(int(p) for p in os.listdir("/proc") if p.isdigit())
                          if os.path.isdir("/proc") else []}))
"""


async def test_the_sandbox_cannot_read_the_instances_secrets(
    harness: ActionHarness, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What `cronpilot dev` keeps (key, API key, UI sign-in token, both SQLite databases),
    another user's folder, the worker's project and home directories and its environment:
    all out of reach, whatever the program tries."""
    monkeypatch.setenv("CRONPILOT_SANDBOX_PROBE", "worker-environment-secret")
    data = tmp_path / "data"
    data.mkdir(mode=0o700)
    kept = ("secret-key", "dev-api-key", "dev-sign-in-token", "cronpilot.db")
    for name in (*kept, "temporal.db"):
        (data / name).write_text(f"{name} contents")
        (data / name).chmod(0o600)
    other = harness.settings.files_root / "someone-else"
    other.mkdir(parents=True)
    (other / "private.txt").write_text("not yours")
    project = Path(__file__).resolve().parents[2]
    paths = [str(data / name) for name in kept]
    paths += [str(data / "temporal.db"), str(other / "private.txt")]
    paths += [str(project / "pyproject.toml"), "/etc/shadow", f"/proc/{os.getpid()}/environ"]
    result = await _result(harness, PROBE, input={"paths": paths})
    probe = result["output"]
    assert probe["files"] == dict.fromkeys(paths, "FileNotFoundError"), probe["files"]
    assert not any("worker-environment-secret" in text for text in probe["environs"])
    assert probe["wrote"] in ("OSError", "PermissionError"), "the system is read-only"
    held = {probe["caps"].get(k) for k in ("CapInh", "CapPrm", "CapEff", "CapBnd")}
    assert held == {"0000000000000000"}, probe["caps"]
    assert 0 < len(probe["pids"]) <= 3, f"only the sandbox's own processes: {probe['pids']}"


async def test_only_the_interpreters_are_visible_of_the_workers_directories(
    harness: ActionHarness,
) -> None:
    project = Path(__file__).resolve().parents[2]
    home = Path.home()
    code = (
        "import json, os, sys\n"
        "listing = {}\n"
        "for path in json.load(sys.stdin):\n"
        "    try:\n"
        "        listing[path] = sorted(os.listdir(path))\n"
        "    except OSError as error:\n"
        "        listing[path] = type(error).__name__\n"
        "print(json.dumps(listing))\n"
    )
    paths = [str(project), str(home), "/", "/etc", "/var", "/srv", "/opt"]
    listing = (await _result(harness, code, input=paths))["output"]
    interpreters = [Path(p) for p in interpreter_paths()]

    def leads_to_an_interpreter(directory: Path, entry: str) -> bool:
        return any(
            interpreter == directory / entry or (directory / entry) in interpreter.parents
            for interpreter in interpreters
        )

    for directory in (project, home):
        shown = listing[str(directory)]
        assert isinstance(shown, list)
        assert all(leads_to_an_interpreter(directory, entry) for entry in shown), shown
    assert "shadow" not in listing["/etc"] and "passwd" in listing["/etc"]
    for hidden in ("/var", "/srv", "/opt"):
        assert listing[hidden] in ("FileNotFoundError", []), (hidden, listing[hidden])


async def test_without_namespaces_the_program_does_not_run_unless_allowed(
    harness: ActionHarness, monkeypatch: pytest.MonkeyPatch
) -> None:
    # As a container's seccomp profile does: the kernel refuses new namespaces (EINVAL
    # here, from an invalid flag; EPERM there).
    monkeypatch.setattr("activities._sandbox.NAMESPACES", 0x1)
    failure = await failure_of(harness, _action("print(1)"), handler=run_code.execute)
    assert (failure.type, failure.non_retryable) == ("CodeIsolationUnavailable", True)
    assert "namespaces" in failure.message and "did not run" in failure.message

    outcome = await harness.run(
        _action("print(2)"), handler=run_code.execute, run_code_require_isolation=False
    )
    assert outcome.result["exit_code"] == 0 and outcome.result["network_isolated"] is False
    assert any("no sandbox" in entry.message for entry in outcome.logs)


async def test_the_kernel_stays_out_of_reach(harness: ActionHarness) -> None:
    """Even as root (without capabilities) the program changes no kernel setting, reads no
    kernel memory and makes no namespace of its own."""
    code = (
        "import ctypes, json, os\n"
        "tried = {}\n"
        "for path in ('/proc/sys/kernel/core_pattern', '/proc/sysrq-trigger'):\n"
        "    try:  # opening for writing says enough; nothing is written\n"
        "        os.close(os.open(path, os.O_WRONLY))\n"
        "        tried[path] = 'written'\n"
        "    except OSError as error:\n"
        "        tried[path] = type(error).__name__\n"
        "try:\n"
        "    tried['kcore'] = len(open('/proc/kcore', 'rb').read(16))\n"
        "except OSError as error:\n"
        "    tried['kcore'] = type(error).__name__\n"
        "libc = ctypes.CDLL(None, use_errno=True)\n"
        "tried['unshare'] = libc.unshare(0x10000000) == 0\n"
        "print(json.dumps(tried))\n"
    )
    tried = (await _result(harness, code))["output"]
    assert tried["/proc/sys/kernel/core_pattern"] != "written", tried
    assert tried["/proc/sysrq-trigger"] != "written", tried
    assert tried["kcore"] in (0, "PermissionError", "FileNotFoundError", "OSError"), tried
    assert tried["unshare"] is False, "a nested user namespace was made"
