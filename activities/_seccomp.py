"""The seccomp filter of ``run_code`` programs: the system calls a sandboxed program is refused.

A deny-list in the spirit of Docker's default profile, as a classic BPF program built here
(libseccomp's Python binding is not on PyPI). The program gets ``EPERM`` for what reaches
kernel parts it has no business with, whatever its namespaces would allow: keyrings,
tracing other processes, BPF, perf, userfaultfd, io_uring, modules and kexec, every mount
and namespace call, swap, reboot, the kernel log, accounting, quotas, file handles, the
clock, I/O ports, odd personalities and vsock sockets (which no network namespace confines:
on a VM they reach the hypervisor's host). ``clone3`` and io_uring answer ``ENOSYS``, as if
the kernel had none, so that libc and libuv fall back to ``clone`` and to threads.

Memory that no per-process limit counts is refused too, so that without a cgroup
``memory_mb`` still bounds each process: ``memfd_create`` and ``memfd_secret`` (anonymous
files outside the scratch), System V shared memory, semaphores and message queues (which
outlive their process in its IPC namespace) answer ``ENOSYS``, as on a kernel built without
them; setting a socket's buffer size (``SO_SNDBUF``, ``SO_RCVBUF``), which would raise it
up to ``net.core.wmem_max`` from the system's default, is ``EPERM``. Python, node and glibc
make none of these calls of their own. Any other system call is allowed.

The filter checks the architecture first: a call through another ABI (a 32-bit
``int 0x80`` on x86_64, AArch32 on aarch64) kills the process, since its numbers are not
the ones listed here, and an x32 call on x86_64 is refused with ``ENOSYS``.
"""

from __future__ import annotations

import errno
import struct

# Classic BPF: the opcodes the filter uses, and seccomp's return values.
BPF_LD_W_ABS = 0x20
BPF_JEQ_K = 0x15
BPF_JGE_K = 0x35
BPF_JSET_K = 0x45
BPF_RET_K = 0x06
SECCOMP_RET_KILL_PROCESS = 0x80000000
SECCOMP_RET_ERRNO = 0x00050000
SECCOMP_RET_ALLOW = 0x7FFF0000
# Offsets in struct seccomp_data: the call's number, its ABI, and its first argument's low
# 32 bits (little-endian machines only, as all three below are).
NR_OFFSET = 0
ARCH_OFFSET = 4
ARG0_OFFSET = 16
ARG1_OFFSET = 24
ARG2_OFFSET = 32
X32_SYSCALL_BIT = 0x40000000
AUDIT_ARCH = {"x86_64": 0xC000003E, "aarch64": 0xC00000B7, "riscv64": 0xC00000F3}

CLONE_NAMESPACES = 0x7E020000  # NEWNS, NEWCGROUP, NEWUTS, NEWIPC, NEWUSER, NEWPID, NEWNET
AF_VSOCK = 40
# setsockopt(2): the level and options that size a socket's buffers (the same numbers on
# the three machines below).
SOL_SOCKET = 1
BUFFER_OPTIONS = (7, 8, 32, 33)  # SO_SNDBUF, SO_RCVBUF, SO_SNDBUFFORCE, SO_RCVBUFFORCE
# personality(2) values Docker allows: PER_LINUX, PER_LINUX32, UNAME26 of both, and the query.
PERSONALITIES = (0x0, 0x8, 0x20000, 0x20008, 0xFFFFFFFF)

# Refused outright: name -> errno.
REFUSED = {
    # keyrings: the worker's session keyring above all
    "add_key": errno.EPERM,
    "request_key": errno.EPERM,
    "keyctl": errno.EPERM,
    # other processes' memory and state
    "ptrace": errno.EPERM,
    "process_vm_readv": errno.EPERM,
    "process_vm_writev": errno.EPERM,
    "process_madvise": errno.EPERM,
    "pidfd_getfd": errno.EPERM,
    "kcmp": errno.EPERM,
    # kernel attack surface a program does not need
    "bpf": errno.EPERM,
    "perf_event_open": errno.EPERM,
    "userfaultfd": errno.EPERM,
    "io_uring_setup": errno.ENOSYS,
    "io_uring_enter": errno.ENOSYS,
    "io_uring_register": errno.ENOSYS,
    "fanotify_init": errno.EPERM,
    "modify_ldt": errno.EPERM,
    "uselib": errno.EPERM,
    # modules and kexec
    "init_module": errno.EPERM,
    "finit_module": errno.EPERM,
    "delete_module": errno.EPERM,
    "kexec_load": errno.EPERM,
    "kexec_file_load": errno.EPERM,
    # mounts and namespaces
    "mount": errno.EPERM,
    "umount2": errno.EPERM,
    "pivot_root": errno.EPERM,
    "move_mount": errno.EPERM,
    "open_tree": errno.EPERM,
    "open_tree_attr": errno.EPERM,
    "fsopen": errno.EPERM,
    "fsconfig": errno.EPERM,
    "fsmount": errno.EPERM,
    "fspick": errno.EPERM,
    "mount_setattr": errno.EPERM,
    "unshare": errno.EPERM,
    "setns": errno.EPERM,
    "clone3": errno.ENOSYS,  # its flags are in memory a filter cannot read
    # memory outside the address space that RLIMIT_AS bounds
    "memfd_create": errno.ENOSYS,
    "memfd_secret": errno.ENOSYS,
    "shmget": errno.ENOSYS,
    "semget": errno.ENOSYS,
    "msgget": errno.ENOSYS,
    # the machine's state
    "swapon": errno.EPERM,
    "swapoff": errno.EPERM,
    "reboot": errno.EPERM,
    "syslog": errno.EPERM,
    "acct": errno.EPERM,
    "quotactl": errno.EPERM,
    "quotactl_fd": errno.EPERM,
    "lookup_dcookie": errno.EPERM,
    "open_by_handle_at": errno.EPERM,
    "name_to_handle_at": errno.EPERM,
    "iopl": errno.EPERM,
    "ioperm": errno.EPERM,
    "settimeofday": errno.EPERM,
    "clock_settime": errno.EPERM,
    "adjtimex": errno.EPERM,
    "clock_adjtime": errno.EPERM,
}

# System call numbers. aarch64 and riscv64 share the generic table; numbers from 424 on are
# the same everywhere.
X86_64 = {
    "add_key": 248,
    "request_key": 249,
    "keyctl": 250,
    "ptrace": 101,
    "process_vm_readv": 310,
    "process_vm_writev": 311,
    "kcmp": 312,
    "bpf": 321,
    "perf_event_open": 298,
    "userfaultfd": 323,
    "fanotify_init": 300,
    "modify_ldt": 154,
    "uselib": 134,
    "init_module": 175,
    "finit_module": 313,
    "delete_module": 176,
    "kexec_load": 246,
    "kexec_file_load": 320,
    "mount": 165,
    "umount2": 166,
    "pivot_root": 155,
    "unshare": 272,
    "setns": 308,
    "swapon": 167,
    "swapoff": 168,
    "reboot": 169,
    "syslog": 103,
    "acct": 163,
    "quotactl": 179,
    "lookup_dcookie": 212,
    "open_by_handle_at": 304,
    "name_to_handle_at": 303,
    "iopl": 172,
    "ioperm": 173,
    "settimeofday": 164,
    "clock_settime": 227,
    "adjtimex": 159,
    "clock_adjtime": 305,
    "memfd_create": 319,
    "shmget": 29,
    "semget": 64,
    "msgget": 68,
    "clone": 56,
    "personality": 135,
    "socket": 41,
    "setsockopt": 54,
}
GENERIC = {
    "add_key": 217,
    "request_key": 218,
    "keyctl": 219,
    "ptrace": 117,
    "process_vm_readv": 270,
    "process_vm_writev": 271,
    "kcmp": 272,
    "bpf": 280,
    "perf_event_open": 241,
    "userfaultfd": 282,
    "fanotify_init": 262,
    "init_module": 105,
    "finit_module": 273,
    "delete_module": 106,
    "kexec_load": 104,
    "kexec_file_load": 294,
    "mount": 40,
    "umount2": 39,
    "pivot_root": 41,
    "unshare": 97,
    "setns": 268,
    "swapon": 224,
    "swapoff": 225,
    "reboot": 142,
    "syslog": 116,
    "acct": 89,
    "quotactl": 60,
    "lookup_dcookie": 18,
    "open_by_handle_at": 265,
    "name_to_handle_at": 264,
    "settimeofday": 170,
    "clock_settime": 112,
    "adjtimex": 171,
    "clock_adjtime": 266,
    "memfd_create": 279,
    "shmget": 194,
    "semget": 190,
    "msgget": 186,
    "clone": 220,
    "personality": 92,
    "socket": 198,
    "setsockopt": 208,
}
COMMON = {
    "pidfd_getfd": 438,
    "process_madvise": 440,
    "io_uring_setup": 425,
    "io_uring_enter": 426,
    "io_uring_register": 427,
    "open_tree": 428,
    "move_mount": 429,
    "fsopen": 430,
    "fsconfig": 431,
    "fsmount": 432,
    "fspick": 433,
    "clone3": 435,
    "mount_setattr": 442,
    "quotactl_fd": 443,
    "memfd_secret": 447,
    "open_tree_attr": 467,
}
NUMBERS = {"x86_64": X86_64 | COMMON, "aarch64": GENERIC | COMMON, "riscv64": GENERIC | COMMON}


def supported(machine: str) -> bool:
    """Whether there is a filter for this machine."""
    return machine in NUMBERS


def program(machine: str) -> bytes:
    """The filter for ``machine`` (``os.uname().machine``), as an array of sock_filter."""
    numbers = NUMBERS[machine]
    code = [
        _load(ARCH_OFFSET),
        _jump(BPF_JEQ_K, AUDIT_ARCH[machine], 1, 0),
        _ret(SECCOMP_RET_KILL_PROCESS),
        _load(NR_OFFSET),
    ]
    if machine == "x86_64":
        code += [_jump(BPF_JGE_K, X32_SYSCALL_BIT, 0, 1), _refuse(errno.ENOSYS)]
    for name, number in sorted(REFUSED.items()):
        if name in numbers:
            code += [_jump(BPF_JEQ_K, numbers[name], 0, 1), _refuse(number)]
    for name, check in (
        ("clone", _unless_flags(CLONE_NAMESPACES)),
        ("personality", _only(PERSONALITIES)),
        ("socket", _unless_equal(AF_VSOCK)),
        ("setsockopt", _unless_buffer_size()),
    ):
        code += [_jump(BPF_JEQ_K, numbers[name], 0, len(check)), *check]
    code.append(_ret(SECCOMP_RET_ALLOW))
    return b"".join(code)


def _unless_flags(mask: int) -> list[bytes]:
    """Refuse when the first argument has any of ``mask``'s bits; else allow."""
    return [
        _load(ARG0_OFFSET),
        _jump(BPF_JSET_K, mask, 0, 1),
        _refuse(errno.EPERM),
        _ret(SECCOMP_RET_ALLOW),
    ]


def _unless_equal(value: int) -> list[bytes]:
    """Refuse when the first argument is ``value``; else allow."""
    return [
        _load(ARG0_OFFSET),
        _jump(BPF_JEQ_K, value, 0, 1),
        _refuse(errno.EPERM),
        _ret(SECCOMP_RET_ALLOW),
    ]


def _unless_buffer_size() -> list[bytes]:
    """Refuse setting a socket's buffer size (level SOL_SOCKET); else allow."""
    options = [
        _jump(BPF_JEQ_K, option, len(BUFFER_OPTIONS) - i, 0)
        for i, option in enumerate(BUFFER_OPTIONS)
    ]
    return [
        _load(ARG1_OFFSET),
        _jump(BPF_JEQ_K, SOL_SOCKET, 0, len(options) + 1),
        _load(ARG2_OFFSET),
        *options,
        _ret(SECCOMP_RET_ALLOW),
        _refuse(errno.EPERM),
    ]


def _only(values: tuple[int, ...]) -> list[bytes]:
    """Allow when the first argument is one of ``values``; else refuse."""
    checks = [_jump(BPF_JEQ_K, value, len(values) - i, 0) for i, value in enumerate(values)]
    return [_load(ARG0_OFFSET), *checks, _refuse(errno.EPERM), _ret(SECCOMP_RET_ALLOW)]


def _load(offset: int) -> bytes:
    return struct.pack("=HBBI", BPF_LD_W_ABS, 0, 0, offset)


def _jump(code: int, value: int, when_true: int, when_false: int) -> bytes:
    return struct.pack("=HBBI", code, when_true, when_false, value)


def _ret(value: int) -> bytes:
    return struct.pack("=HBBI", BPF_RET_K, 0, 0, value)


def _refuse(number: int) -> bytes:
    return _ret(SECCOMP_RET_ERRNO | number)
