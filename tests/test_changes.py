from __future__ import annotations

import os
from pathlib import Path

import pytest

from phasedoit.changes import Fingerprint, file_hashes, reasons
from phasedoit.packaging import DEFAULT_EXCLUDE
from phasedoit.stack import RemoteStack

SHA_OF_A = "ca978112ca1bbdcafac231b39a23dc4da786eff8147c4e72b9807785afee48bb"


def test_file_hashes_are_content_by_relative_path(tmp_path: Path) -> None:
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "handler.py").write_text("a")
    (tmp_path / "template.yml").write_text("a")
    before = file_hashes(tmp_path, DEFAULT_EXCLUDE)
    assert before == {"src/handler.py": SHA_OF_A, "template.yml": SHA_OF_A}
    os.utime(tmp_path / "template.yml", (0, 0))
    assert file_hashes(tmp_path, DEFAULT_EXCLUDE) == before


def test_file_hashes_leave_out_vcs_caches_and_packages(tmp_path: Path) -> None:
    for name in (
        ".git/HEAD",
        "node_modules/x/index.js",
        "src/__pycache__/h.cpython-311.pyc",
        "h.pyc",
        ".serverless/s.json",
    ):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("x")
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "notes.md").write_text("a")
    (tmp_path / "template.yml").write_text("a")
    assert list(file_hashes(tmp_path, DEFAULT_EXCLUDE)) == ["template.yml", "docs/notes.md"]
    assert list(file_hashes(tmp_path, (*DEFAULT_EXCLUDE, "docs", "*.md"))) == ["template.yml"]
    assert list(file_hashes(tmp_path, (*DEFAULT_EXCLUDE, "docs/notes.md"))) == ["template.yml"]
    assert list(file_hashes(tmp_path, (*DEFAULT_EXCLUDE, "docs/*"))) == ["template.yml"]


def test_a_folder_is_left_out_by_its_path(tmp_path: Path) -> None:
    for name in ("src/generated/a.py", "src/handler.py", "generated/b.py"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("a")
    assert list(file_hashes(tmp_path, ("src/generated",))) == ["generated/b.py", "src/handler.py"]


NOW = Fingerprint({"template.yml": "1", "handler.py": "2"}, "settings", {"dev-Topic": "t"})
LAST = NOW.saved()


def remote(fingerprint: str | None = NOW.value, status: str = "UPDATE_COMPLETE") -> RemoteStack:
    return RemoteStack(status, fingerprint, {})


@pytest.mark.parametrize(
    ("current", "last", "stack", "expected"),
    [
        (NOW, LAST, remote(), []),
        (NOW, {}, remote(), []),  # no local state: the stack's tag decides
        (NOW, {}, None, ["never deployed"]),
        (NOW, LAST, None, ["stack missing"]),
        (NOW, LAST, remote(status="ROLLBACK_COMPLETE"), ["stack is ROLLBACK_COMPLETE"]),
        # a rolled-back update leaves the previous template and tags: its fingerprint tag says what runs
        (NOW, LAST, remote(status="UPDATE_ROLLBACK_COMPLETE"), []),
        (NOW, LAST, remote("old", status="UPDATE_ROLLBACK_COMPLETE"), ["last update rolled back"]),
        (NOW, LAST, remote("old", status="IMPORT_ROLLBACK_COMPLETE"), ["last update rolled back"]),
        (NOW, {}, remote(None), ["stack not deployed by phasedoit"]),
        (NOW, {}, remote("old"), ["changed since its last deploy"]),
        (NOW, LAST, remote("other"), ["stack changed outside phasedoit"]),
        (
            Fingerprint({"template.yml": "9", "new.py": "3"}, "settings", {"dev-Topic": "t"}),
            LAST,
            remote(),
            ["changed files: handler.py, new.py, template.yml"],
        ),
        (
            Fingerprint({f"f{i}": "x" for i in range(8)}, "other", {"dev-Topic": "u"}),
            {**LAST, "files": {}},
            remote(),
            [
                "changed files: f0, f1, f2, f3, f4 and 3 more",
                "changed settings",
                "changed upstream: dev-Topic",
            ],
        ),
    ],
)
def test_reasons(
    current: Fingerprint, last: dict[str, object], stack: RemoteStack | None, expected: list[str]
) -> None:
    assert reasons(current, last, stack) == expected


def test_fingerprint_covers_every_part() -> None:
    values = {
        NOW.value,
        Fingerprint({**NOW.files, "x": "1"}, NOW.settings, NOW.upstream).value,
        Fingerprint(NOW.files, "other", NOW.upstream).value,
        Fingerprint(NOW.files, NOW.settings, {}).value,
    }
    assert len(values) == 4
