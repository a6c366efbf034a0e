"""run_code's seccomp filter: its system call numbers against the kernel's own headers, and
its verdicts through a classic-BPF interpreter, for each machine it knows (its effect on
real programs is in test_run_code_sandbox.py)."""

from __future__ import annotations

import errno
import struct
from pathlib import Path

import pytest

from activities import _seccomp


def _header_numbers(path: Path, prefix: str) -> dict[str, int]:
    found = {}
    for line in path.read_text().splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[0] == "#define" and parts[1].startswith(prefix):
            if parts[2].isdigit():
                found[parts[1].removeprefix(prefix)] = int(parts[2])
    return found


@pytest.mark.parametrize(
    ("machine", "header", "prefixes"),
    [
        ("x86_64", "/usr/include/x86_64-linux-gnu/asm/unistd_64.h", ("__NR_",)),
        ("aarch64", "/usr/include/asm-generic/unistd.h", ("__NR_", "__NR3264_")),
    ],
)
def test_the_filters_system_call_numbers_are_the_kernels(
    machine: str, header: str, prefixes: tuple[str, ...]
) -> None:
    """Every number the filter refuses by, checked against the kernel's own headers."""
    if not Path(header).exists():
        pytest.skip(f"no {header} on this machine")
    known: dict[str, int] = {}
    for prefix in prefixes:
        known |= _header_numbers(Path(header), prefix)
    numbers = _seccomp.NUMBERS[machine]
    checked = {name: number for name, number in numbers.items() if name in known}
    assert checked == {name: known[name] for name in checked}
    assert set(numbers) - set(checked) <= {"open_tree_attr"}, "newer than these headers"


# The filter's verdicts, read by a small classic-BPF interpreter: the opcodes the filter
# uses, over a struct seccomp_data. Jumps that leave the program fail the test.
KILL = "kill"
ALLOW = "allow"
FOREIGN_ARCH = {"x86_64": 0x40000003, "aarch64": 0x40000028}  # i386, ARM (AArch32)
# Calls by machine for the verdicts below (the test's own table, not the filter's).
CALLS = {
    "x86_64": {"read": 0, "clone": 56, "personality": 135, "socket": 41, "setsockopt": 54},
    "aarch64": {"read": 63, "clone": 220, "personality": 92, "socket": 198, "setsockopt": 208},
}
CLONE_NEW = {
    "NEWNS": 0x00020000,
    "NEWCGROUP": 0x02000000,
    "NEWUTS": 0x04000000,
    "NEWIPC": 0x08000000,
    "NEWUSER": 0x10000000,
    "NEWPID": 0x20000000,
    "NEWNET": 0x40000000,
}
FORK_FLAGS = 0x01200011  # CLONE_CHILD_SETTID | CLONE_CHILD_CLEARTID | SIGCHLD, as glibc's fork
THREAD_FLAGS = 0x003D0F00  # glibc's pthread_create
SOL_SOCKET, SO_SNDBUF, SO_RCVBUF, SO_REUSEADDR, IPPROTO_TCP = 1, 7, 8, 2, 6


def _verdict(code: bytes, nr: int, arch: int, *args: int) -> str | int:
    """What the filter answers: KILL, ALLOW or the errno it refuses with."""
    program: list[tuple[int, int, int, int]] = [
        struct.unpack("=HBBI", code[i : i + 8]) for i in range(0, len(code), 8)
    ]
    values = [*args, *[0] * (6 - len(args))]
    data = struct.pack("=iIQ6Q", nr, arch, 0, *values)
    pc, accumulator = 0, 0
    while True:
        assert 0 <= pc < len(program), f"a jump left the program (pc {pc})"
        opcode, when_true, when_false, k = program[pc]
        if opcode == _seccomp.BPF_LD_W_ABS:
            accumulator = struct.unpack_from("=I", data, k)[0]
            pc += 1
        elif opcode in (_seccomp.BPF_JEQ_K, _seccomp.BPF_JGE_K, _seccomp.BPF_JSET_K):
            taken = {
                _seccomp.BPF_JEQ_K: accumulator == k,
                _seccomp.BPF_JGE_K: accumulator >= k,
                _seccomp.BPF_JSET_K: bool(accumulator & k),
            }[opcode]
            pc += 1 + (when_true if taken else when_false)
        elif opcode == _seccomp.BPF_RET_K:
            if k == _seccomp.SECCOMP_RET_KILL_PROCESS:
                return KILL
            if k == _seccomp.SECCOMP_RET_ALLOW:
                return ALLOW
            assert k & 0xFFFF0000 == _seccomp.SECCOMP_RET_ERRNO, hex(k)
            return k & 0xFFFF
        else:
            raise AssertionError(f"opcode {opcode:#x} at {pc}")


@pytest.mark.parametrize("machine", ["x86_64", "aarch64"])
def test_the_filters_verdicts(machine: str) -> None:
    """Each branch of the filter, machine by machine: the architecture check, x32, clone's
    flags, personality's allow-list, socket families, setsockopt's buffer sizes, clone3,
    every refused call, and an ordinary call."""
    code = _seccomp.program(machine)
    arch, calls = _seccomp.AUDIT_ARCH[machine], CALLS[machine]

    def verdict(name: str | int, *args: int, on: int = arch) -> str | int:
        return _verdict(code, calls[name] if isinstance(name, str) else name, on, *args)

    assert len(code) % 8 == 0 and len(code) // 8 <= 4096  # BPF_MAXINSNS
    assert verdict("read", on=FOREIGN_ARCH[machine]) == KILL
    assert verdict(0x40000000 | 20, on=FOREIGN_ARCH[machine]) == KILL
    assert verdict("read") == ALLOW
    assert verdict("clone", FORK_FLAGS) == ALLOW
    assert verdict("clone", THREAD_FLAGS) == ALLOW
    for name, flag in CLONE_NEW.items():
        assert verdict("clone", FORK_FLAGS | flag) == errno.EPERM, name
    # Only the low 32 bits of clone's flags count (the kernel's legacy clone drops the rest).
    assert verdict("clone", (1 << 32) | FORK_FLAGS) == ALLOW
    for allowed in (0x0, 0x8, 0x20000, 0x20008, 0xFFFFFFFF):
        assert verdict("personality", allowed) == ALLOW, hex(allowed)
    for other in (0x0040000, 0x0400000, 0x0200000, 0x1):  # no ASLR, READ_IMPLIES_EXEC, ...
        assert verdict("personality", other) == errno.EPERM, hex(other)
    assert verdict("socket", 40, 1, 0) == errno.EPERM  # AF_VSOCK
    for family in (1, 2, 10, 16):  # AF_UNIX, AF_INET, AF_INET6, AF_NETLINK
        assert verdict("socket", family, 1, 0) == ALLOW, family
    for option in (SO_SNDBUF, SO_RCVBUF, 32, 33):
        assert verdict("setsockopt", 3, SOL_SOCKET, option) == errno.EPERM, option
    assert verdict("setsockopt", 3, SOL_SOCKET, SO_REUSEADDR) == ALLOW
    assert verdict("setsockopt", 3, IPPROTO_TCP, SO_SNDBUF) == ALLOW  # TCP_WINDOW_CLAMP
    assert verdict(435) == errno.ENOSYS  # clone3
    numbers = _seccomp.NUMBERS[machine]
    refused = {
        numbers[name]: number for name, number in _seccomp.REFUSED.items() if name in numbers
    }
    for nr, number in refused.items():
        assert verdict(nr) == number, nr
    # Every other call of the table's range is allowed: no jump lands on another's verdict.
    special = {numbers[name] for name in ("clone", "personality", "socket", "setsockopt")}
    for nr in set(range(512)) - special - set(refused):
        assert verdict(nr) == ALLOW, nr


def test_x32_calls_are_refused_whatever_the_kernel() -> None:
    """x86_64's x32 ABI shares the architecture value: the filter refuses it (ENOSYS) by the
    call number's x32 bit, refused and ordinary calls alike, whether or not the kernel
    supports x32."""
    code = _seccomp.program("x86_64")
    arch = _seccomp.AUDIT_ARCH["x86_64"]
    for nr in (0, 39, 56, 250, 319, 0x1FF):
        assert _verdict(code, 0x40000000 | nr, arch) == errno.ENOSYS, nr
    assert _verdict(code, -1, arch) == errno.ENOSYS  # every high number, x32 bit included
