"""The file_operation action on real files: every operation, confinement and size limits."""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path
from typing import Any

import pytest
from temporalio.exceptions import ApplicationError

from activities.file_operation import (
    MAX_FILE_BYTES,
    MAX_LIST_ENTRIES,
    MAX_READ_BYTES,
    MAX_WRITE_BYTES,
    operate,
)
from schema import crud
from tests.fixtures.actions import ActionHarness, failure_of


def _action(operation: str, path: str, **config: Any) -> dict[str, Any]:
    return {"type": "file_operation", "config": {"operation": operation, "path": path, **config}}


async def _do(harness: ActionHarness, operation: str, path: str, **config: Any) -> Any:
    outcome = await harness.run(_action(operation, path, **config), handler=operate)
    assert str(harness.settings.files_root) not in json.dumps(outcome.result)
    return outcome.result


async def _refused(
    harness: ActionHarness, operation: str, path: str, error_type: str, **config: Any
) -> ApplicationError:
    error = await failure_of(harness, _action(operation, path, **config), handler=operate)
    assert (error.type, error.non_retryable) == (error_type, True), error.message
    assert str(harness.settings.files_root) not in error.message
    return error


def _folder(harness: ActionHarness) -> Path:
    folder = harness.settings.files_root / str(harness.user_id)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


async def _other_user(harness: ActionHarness) -> ActionHarness:
    async with harness.sessions.begin() as session:
        user = await crud.create_user(session, name=f"files-{uuid.uuid4().hex[:8]}")
    return ActionHarness(harness.settings, harness.sessions, user.id)


async def test_write_append_read_and_exists(harness: ActionHarness) -> None:
    written = await _do(harness, "write", "a/b/notes.txt", content="héllo\n")
    assert written == {"path": "a/b/notes.txt", "size": 7}
    assert (_folder(harness) / "a/b/notes.txt").read_text() == "héllo\n"
    assert await _do(harness, "append", "a/b/notes.txt", content="more") == {
        "path": "a/b/notes.txt",
        "size": 11,
    }
    assert await _do(harness, "append", "fresh.log", content="x") == {
        "path": "fresh.log",
        "size": 1,
    }
    assert await _do(harness, "read", "a/./b//notes.txt") == {
        "path": "a/b/notes.txt",
        "content": "héllo\nmore",
        "size": 11,
        "binary": False,
    }
    assert (await _do(harness, "write", "a/b/notes.txt", content="new"))["size"] == 3
    assert (await _do(harness, "read", "a/b/notes.txt"))["content"] == "new"
    assert await _do(harness, "exists", "a/b/notes.txt") == {
        "path": "a/b/notes.txt",
        "exists": True,
        "type": "file",
    }
    assert await _do(harness, "exists", "a") == {"path": "a", "exists": True, "type": "dir"}
    assert await _do(harness, "exists", "nope/x") == {
        "path": "nope/x",
        "exists": False,
        "type": None,
    }


async def test_copy_move_list_and_delete(harness: ActionHarness) -> None:
    folder = _folder(harness)
    (folder / "report.csv").write_text("a,b\n")
    assert await _do(harness, "copy", "report.csv", destination="backup/2024/report.csv") == {
        "path": "report.csv",
        "destination": "backup/2024/report.csv",
    }
    assert (folder / "backup/2024/report.csv").read_text() == "a,b\n"
    (folder / "old.csv").write_text("old")
    await _do(harness, "copy", "report.csv", destination="old.csv")
    assert (folder / "old.csv").read_text() == "a,b\n"
    moved = await _do(harness, "move", "old.csv", destination="archive/old.csv")
    assert moved == {"path": "old.csv", "destination": "archive/old.csv"}
    assert not (folder / "old.csv").exists() and (folder / "archive/old.csv").exists()
    await _do(harness, "move", "backup/2024", destination="archive/2024")
    assert (folder / "archive/2024/report.csv").exists()
    listed = await _do(harness, "list", ".")
    assert listed == {
        "path": ".",
        "entries": [
            {"name": "archive", "type": "dir", "size": None},
            {"name": "backup", "type": "dir", "size": None},
            {"name": "report.csv", "type": "file", "size": 4},
        ],
        "truncated": False,
    }
    assert [e["name"] for e in (await _do(harness, "list", "archive"))["entries"]] == [
        "2024",
        "old.csv",
    ]
    assert await _do(harness, "delete", "report.csv") == {"path": "report.csv", "deleted": True}
    assert not (folder / "report.csv").exists()
    await _refused(harness, "delete", "archive", "DirectoryNotEmpty")
    assert (folder / "archive/old.csv").exists()
    assert await _do(harness, "delete", "backup") == {"path": "backup", "deleted": True}
    assert not (folder / "backup").exists()


async def test_long_listings_are_truncated(harness: ActionHarness) -> None:
    folder = _folder(harness)
    for n in range(MAX_LIST_ENTRIES + 5):
        (folder / f"f{n:05d}").touch()
    listed = await _do(harness, "list", ".")
    assert listed["truncated"] is True and len(listed["entries"]) == MAX_LIST_ENTRIES
    assert listed["entries"][0]["name"] == "f00000"


async def test_missing_files_are_not_found_and_not_retried(harness: ActionHarness) -> None:
    _folder(harness)
    for operation, extra in (
        ("read", {}),
        ("copy", {"destination": "b.txt"}),
        ("move", {"destination": "b.txt"}),
        ("delete", {}),
        ("list", {}),
    ):
        error = await _refused(harness, operation, "dir/missing.txt", "FileNotFound", **extra)
        assert "dir/missing.txt" in error.message
    assert not (_folder(harness) / "b.txt").exists()


async def test_wrong_kinds_of_file_are_refused(harness: ActionHarness) -> None:
    folder = _folder(harness)
    (folder / "dir/sub").mkdir(parents=True)
    (folder / "file.txt").write_text("x")
    await _refused(harness, "read", "dir", "IsADirectory")
    await _refused(harness, "write", "dir", "IsADirectory", content="x")
    await _refused(harness, "copy", "dir", "IsADirectory", destination="d2")
    await _refused(harness, "copy", "file.txt", "IsADirectory", destination="dir")
    await _refused(harness, "move", "file.txt", "IsADirectory", destination="dir")
    await _refused(harness, "list", "file.txt", "NotADirectory")
    await _refused(harness, "write", "file.txt/inner.txt", "NotADirectory", content="x")
    moved_in = await _refused(harness, "move", "dir", "InvalidPath", destination="dir/sub/dir")
    assert "into itself" in moved_in.message
    await _refused(harness, "copy", "file.txt", "InvalidPath", destination="./file.txt")
    for path in (".", "./"):
        await _refused(harness, "delete", path, "PathNotAllowed")
        await _refused(harness, "move", path, "PathNotAllowed", destination="elsewhere")
    os.mkfifo(folder / "pipe")
    await _refused(harness, "read", "pipe", "UnsupportedFileType")
    await _refused(harness, "append", "pipe", "UnsupportedFileType", content="x")
    assert await _do(harness, "exists", "pipe") == {"path": "pipe", "exists": True, "type": "other"}
    assert (folder / "file.txt").read_text() == "x" and (folder / "dir/sub").is_dir()


async def test_binary_files_are_read_as_replaced_utf8(harness: ActionHarness) -> None:
    (_folder(harness) / "blob.bin").write_bytes(b"\x00\xffok\xc3\xa9")
    read = await _do(harness, "read", "blob.bin")
    assert read == {"path": "blob.bin", "content": "\ufffd\ufffdoké", "size": 6, "binary": True}


@pytest.mark.parametrize(
    "path", ["../x", "a/../../x", "a/../b", "..", "/etc/passwd", "//etc/passwd", "/"]
)
async def test_traversal_and_absolute_paths_are_refused(harness: ActionHarness, path: str) -> None:
    (_folder(harness) / "a").mkdir()
    for operation, extra in (
        ("read", {}),
        ("write", {"content": "pwned"}),
        ("append", {"content": "pwned"}),
        ("exists", {}),
        ("list", {}),
        ("delete", {}),
        ("copy", {"destination": "copy"}),
    ):
        await _refused(harness, operation, path, "PathNotAllowed", **extra)
    root = harness.settings.files_root
    assert not (root / "x").exists() and not (root.parent / "x").exists()
    assert not (_folder(harness) / "b").exists() and not (_folder(harness) / "copy").exists()


async def test_symlinks_leading_outside_are_refused(harness: ActionHarness, tmp_path: Path) -> None:
    folder = _folder(harness)
    neighbour = harness.settings.files_root / str(uuid.uuid4())
    neighbour.mkdir()
    (neighbour / "private.txt").write_text("theirs")
    outside = tmp_path / "outside.txt"
    outside.write_text("untouched")
    (folder / "etc").symlink_to("/etc")
    (folder / "neighbour").symlink_to(neighbour)
    (folder / "sneaky").symlink_to(f"../{neighbour.name}")
    (folder / "out.txt").symlink_to(outside)
    (folder / "dangling.txt").symlink_to(tmp_path / "created-outside.txt")
    (folder / "nested").mkdir()
    (folder / "nested/up").symlink_to("../../")
    (folder / "mine.txt").write_text("mine")

    await _refused(harness, "read", "etc/passwd", "PathNotAllowed")
    await _refused(harness, "list", "etc", "PathNotAllowed")
    await _refused(harness, "exists", "etc/hostname", "PathNotAllowed")
    await _refused(harness, "delete", "etc", "PathNotAllowed")
    await _refused(harness, "copy", "etc/passwd", "PathNotAllowed", destination="passwd")
    for link in ("neighbour", "sneaky", f"nested/up/{neighbour.name}"):
        await _refused(harness, "read", f"{link}/private.txt", "PathNotAllowed")
        await _refused(harness, "write", f"{link}/new.txt", "PathNotAllowed", content="x")
        await _refused(harness, "delete", f"{link}/private.txt", "PathNotAllowed")
    for operation in ("write", "append"):
        await _refused(harness, operation, "out.txt", "PathNotAllowed", content="pwned")
        await _refused(harness, operation, "dangling.txt", "PathNotAllowed", content="pwned")
    await _refused(harness, "move", "out.txt", "PathNotAllowed", destination="moved.txt")
    assert outside.read_text() == "untouched"
    assert not (tmp_path / "created-outside.txt").exists()
    assert sorted(p.name for p in neighbour.iterdir()) == ["private.txt"]
    listed = await _do(harness, "list", ".")
    assert [e["name"] for e in listed["entries"]] == ["mine.txt", "nested"]


async def test_symlinks_staying_inside_are_followed(harness: ActionHarness) -> None:
    folder = _folder(harness)
    (folder / "docs/2024").mkdir(parents=True)
    (folder / "docs/2024/plan.txt").write_text("plan")
    (folder / "current").symlink_to("docs/2024")
    (folder / "latest.txt").symlink_to(folder / "docs/2024/plan.txt")
    read = await _do(harness, "read", "current/plan.txt")
    assert (read["path"], read["content"]) == ("docs/2024/plan.txt", "plan")
    assert (await _do(harness, "append", "latest.txt", content="!"))["path"] == "docs/2024/plan.txt"
    assert (folder / "docs/2024/plan.txt").read_text() == "plan!"
    assert (folder / "latest.txt").is_symlink()
    listed = await _do(harness, "list", ".")
    assert listed["entries"] == [
        {"name": "current", "type": "dir", "size": None},
        {"name": "docs", "type": "dir", "size": None},
        {"name": "latest.txt", "type": "file", "size": 5},
    ]
    await _do(harness, "copy", "latest.txt", destination="current/copy.txt")
    assert (folder / "docs/2024/copy.txt").read_text() == "plan!"
    assert await _do(harness, "delete", "latest.txt") == {"path": "latest.txt", "deleted": True}
    assert not (folder / "latest.txt").is_symlink() and (folder / "docs/2024/plan.txt").exists()
    await _do(harness, "move", "current", destination="now")
    assert (folder / "now").is_symlink() and (folder / "docs/2024/plan.txt").exists()


async def test_copy_and_move_destinations_cannot_escape(harness: ActionHarness) -> None:
    folder = _folder(harness)
    (folder / "data.txt").write_text("data")
    (folder / "tmp").symlink_to(harness.settings.files_root)
    for destination in ("../data.txt", "a/../../data.txt", "/tmp/data.txt", "tmp/data.txt"):
        for operation in ("copy", "move"):
            await _refused(
                harness, operation, "data.txt", "PathNotAllowed", destination=destination
            )
    assert (folder / "data.txt").read_text() == "data"
    assert sorted(p.name for p in harness.settings.files_root.iterdir()) == [folder.name]


async def test_users_cannot_see_each_others_files(harness: ActionHarness) -> None:
    other = await _other_user(harness)
    await _do(harness, "write", "secret.txt", content="mine")
    assert (await _do(other, "exists", "secret.txt"))["exists"] is False
    await _refused(other, "read", "secret.txt", "FileNotFound")
    assert (await _do(other, "list", "."))["entries"] == []
    await _refused(other, "read", f"../{harness.user_id}/secret.txt", "PathNotAllowed")
    await _do(other, "write", "secret.txt", content="theirs")
    assert (await _do(harness, "read", "secret.txt"))["content"] == "mine"
    assert (_folder(other) / "secret.txt").read_text() == "theirs"


async def test_size_limits(harness: ActionHarness) -> None:
    folder = _folder(harness)
    (folder / "big.txt").write_bytes(b"x" * (MAX_READ_BYTES + 1))
    error = await _refused(harness, "read", "big.txt", "FileTooLarge")
    assert str(MAX_READ_BYTES) in error.message
    # Two UTF-8 bytes per character: within the config's character cap, over the byte cap.
    await _refused(
        harness, "write", "huge.txt", "FileTooLarge", content="é" * (MAX_WRITE_BYTES // 2 + 1)
    )
    assert not (folder / "huge.txt").exists()
    with (folder / "full.log").open("wb") as sparse:
        sparse.truncate(MAX_FILE_BYTES)
    await _refused(harness, "append", "full.log", "FileTooLarge", content="x")
    assert (folder / "full.log").stat().st_size == MAX_FILE_BYTES
    with (folder / "huge.bin").open("wb") as sparse:
        sparse.truncate(MAX_FILE_BYTES + 1)
    await _refused(harness, "copy", "huge.bin", "FileTooLarge", destination="copy.bin")
    assert not (folder / "copy.bin").exists()
