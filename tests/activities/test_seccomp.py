"""run_code's seccomp filter: its system call numbers against the kernel's own headers (its
effect on real programs is in test_run_code_sandbox.py)."""

from __future__ import annotations

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
