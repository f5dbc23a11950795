"""Parsed templates kept between runs: served only for a file as it was, never a secret, never an error."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import pytest

from phasedoit import templatecache, templates
from phasedoit.config import load_config
from phasedoit.errors import PhasedoitError
from phasedoit.planning import STATE_DIR, plan_stage
from phasedoit.templatecache import TemplateCache

SHOWN = "services/api/template.yml"
TEMPLATE = "Resources:\n  Topic:\n    Type: AWS::SNS::Topic\n    Properties: {TopicName: !Sub '${Stage}-a'}\n"
PARSED = {
    "Resources": {
        "Topic": {"Type": "AWS::SNS::Topic", "Properties": {"TopicName": {"Fn::Sub": "${Stage}-a"}}}
    }
}
VERSION = "readers-1"


def written(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


class Reader:
    """Reads a template as planning does, counting the parses the cache did not spare."""

    def __init__(self, path: Path) -> None:
        self.path, self.parses = path, 0

    def __call__(self) -> dict[str, Any]:
        self.parses += 1
        return templates.load_template(self.path, SHOWN)


def run(
    cache_file: Path, template: Path, version: str | None = VERSION, racy_seconds: float = 0.0
) -> tuple[dict[str, Any], int]:
    """One run: the template as a run's cache gives it, and how many times it was parsed; then saved.

    A file is kept if it was changed before it was read (`racy_seconds`: 0), not seconds before: a
    test does not wait (the test of that window does).
    """
    cache, read = TemplateCache(cache_file, version, racy_seconds), Reader(template)
    found = cache.load(template, read)
    cache.save()
    return found, read.parses


@pytest.fixture
def template(tmp_path: Path) -> Path:
    return written(tmp_path / "services" / "api" / "template.yml", TEMPLATE)


def test_a_template_as_it_was_is_not_parsed_again(tmp_path: Path, template: Path) -> None:
    cache_file = tmp_path / STATE_DIR / templatecache.FILE_NAME
    assert run(cache_file, template) == (PARSED, 1)
    assert run(cache_file, template) == (PARSED, 0)
    assert run(cache_file, template) == (PARSED, 0)


def test_what_a_hit_gives_is_what_the_cache_holds(tmp_path: Path, template: Path) -> None:
    """(So that the tests above show the cache is read: a hit is never the file parsed again.)"""
    cache_file = tmp_path / STATE_DIR / templatecache.FILE_NAME
    run(cache_file, template)
    data = json.loads(cache_file.read_text())
    data["files"][str(template)][4] = json.dumps({"Resources": {"Marked": {"Type": "AWS::SNS::Topic"}}})
    cache_file.write_text(json.dumps(data))
    assert run(cache_file, template) == ({"Resources": {"Marked": {"Type": "AWS::SNS::Topic"}}}, 0)


@pytest.mark.parametrize(
    "edit",
    [
        TEMPLATE.replace("-a'", "-b'"),  # same size, and its mtime put back as it was below
        TEMPLATE + "  Queue:\n    Type: AWS::SQS::Queue\n",
    ],
)
def test_a_changed_template_is_read_again(tmp_path: Path, template: Path, edit: str) -> None:
    cache_file = tmp_path / STATE_DIR / templatecache.FILE_NAME
    run(cache_file, template)
    before = template.stat()
    time.sleep(0.01)  # a later ctime, on any file system clock worth the name
    template.write_text(edit)
    os.utime(template, ns=(before.st_atime_ns, before.st_mtime_ns))
    expected = templates.load_template(template, SHOWN)
    assert expected != PARSED
    assert run(cache_file, template) == (expected, 1)
    assert run(cache_file, template) == (expected, 0)


def test_a_template_replaced_by_another_file_is_read_again(tmp_path: Path, template: Path) -> None:
    cache_file = tmp_path / STATE_DIR / templatecache.FILE_NAME
    run(cache_file, template)
    before = template.stat()
    other = written(template.with_name("new.yml"), TEMPLATE.replace("-a'", "-b'"))
    os.utime(other, ns=(before.st_atime_ns, before.st_mtime_ns))
    other.replace(template)  # the same size and times, another inode
    assert run(cache_file, template) == (templates.load_template(template, SHOWN), 1)


def test_a_template_changed_just_now_is_not_kept(tmp_path: Path) -> None:
    """An edit in the same clock tick as the reading could keep its size and times: only older ones are kept."""
    template = written(tmp_path / "services" / "api" / "template.yml", TEMPLATE)
    cache_file = tmp_path / STATE_DIR / templatecache.FILE_NAME
    window = templatecache.RACY_SECONDS
    assert run(cache_file, template, racy_seconds=window) == (PARSED, 1)
    assert run(cache_file, template, racy_seconds=window) == (PARSED, 1)
    assert not cache_file.exists()
    then = time.time() - window - 1
    os.utime(template, (then, then))  # an old mtime: its ctime is still now
    assert run(cache_file, template, racy_seconds=window) == (PARSED, 1)
    assert not cache_file.exists()


@pytest.mark.parametrize(
    "content",
    [
        "\0\1 not json",
        "[]",
        '{"version": "readers-1", "files": []}',
        '{"version": "readers-1", "files": {"PATH": [1, 2]}}',
        '{"version": "readers-1", "files": {"PATH": "STAMP"}}',
        '{"version": "readers-1", "files": {"PATH": ["STAMP", "not json"]}}',
        '{"version": "readers-1", "files": {"PATH": ["STAMP", "[1, 2]"]}}',
        '{"version": "readers-1", "files": {"PATH": ["STAMP", "{\\"Resources\\": []}"]}}',
        '{"version": "readers-1", "files": {"PATH": ["STAMP", 7]}}',
        '{"version": "readers-0", "files": {"PATH": ["STAMP", "{\\"Resources\\": {\\"Old\\": {}}}"]}}',
    ],
)
def test_a_corrupt_or_foreign_cache_is_ignored(tmp_path: Path, template: Path, content: str) -> None:
    status = template.stat()
    stamp = json.dumps([status.st_mtime_ns, status.st_ctime_ns, status.st_size, status.st_ino])[1:-1]
    cache_file = tmp_path / STATE_DIR / templatecache.FILE_NAME
    cache_file.parent.mkdir()
    cache_file.write_text(content.replace("PATH", str(template)).replace('"STAMP"', stamp))
    assert run(cache_file, template) == (PARSED, 1)
    assert run(cache_file, template) == (PARSED, 0)  # written again, whole


def test_a_cache_that_cannot_be_read_or_written_is_no_error(tmp_path: Path, template: Path) -> None:
    cache_file = tmp_path / STATE_DIR / templatecache.FILE_NAME
    cache_file.mkdir(parents=True)  # a folder where the file goes
    assert run(cache_file, template) == (PARSED, 1)
    assert run(cache_file, template) == (PARSED, 1)
    assert run(tmp_path / "gone" / STATE_DIR / templatecache.FILE_NAME, template) == (PARSED, 1)
    assert not (tmp_path / "gone").exists()  # the app's folder is not made again


def test_no_readers_no_cache(tmp_path: Path, template: Path) -> None:
    cache_file = tmp_path / STATE_DIR / templatecache.FILE_NAME
    assert run(cache_file, template, version=None) == (PARSED, 1)
    assert not cache_file.exists()
    assert templatecache.reader_version() == templatecache.reader_version() is not None


def test_what_json_cannot_hold_exactly_is_not_kept(tmp_path: Path) -> None:
    """A YAML key `80:` is the number 80; JSON would give it back as the text '80'."""
    text = "Mappings:\n  Ports:\n    80: {Name: http}\nResources:\n  T: {Type: AWS::SNS::Topic}\n"
    template = written(tmp_path / "services" / "api" / "template.yml", text)
    cache_file = tmp_path / STATE_DIR / templatecache.FILE_NAME
    found, parses = run(cache_file, template)
    assert (found["Mappings"], parses) == ({"Ports": {80: {"Name": "http"}}}, 1)
    assert run(cache_file, template) == (found, 1)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("Resources: [\n", "services/api/template.yml: line 2, column 1: expected the node content, but found '<stream end>'"),
        ("Outputs: {}\n", "services/api/template.yml: not a CloudFormation template (no Resources mapping)"),
    ],
)  # fmt: skip
def test_a_template_in_error_is_never_kept(tmp_path: Path, text: str, message: str) -> None:
    template = written(tmp_path / "services" / "api" / "template.yml", text)
    cache_file = tmp_path / STATE_DIR / templatecache.FILE_NAME
    for _ in range(2):
        with pytest.raises(PhasedoitError) as excinfo:
            run(cache_file, template)
        assert str(excinfo.value) == message
    assert not cache_file.exists()


def test_the_cache_never_holds_a_parameter_value(tmp_path: Path) -> None:
    """Planning keeps the templates as the files say them; a `{env: NAME}` value is resolved after."""
    template = (
        "Parameters:\n  Token: {Type: String, NoEcho: true}\nResources:\n  T: {Type: AWS::SNS::Topic}\n"
    )
    written(tmp_path / "services" / "db" / "template.yml", template)
    (tmp_path / "phases.yml").write_text(
        "app: shop\nphases: [[db]]\nservices:\n  db: {parameters: {Token: {env: DB_TOKEN}}}\n"
    )
    environ = {"AWS_REGION": "us-east-1", "DB_TOKEN": "hunter2-secret"}
    cache = templatecache.for_state(tmp_path / STATE_DIR)  # the one planning uses
    cache.racy_seconds = 0.0  # the template was written just now: keep it all the same
    plan = plan_stage(load_config(tmp_path / "phases.yml"), None, environ)
    assert plan.services["db"].request.parameters == {"Token": "hunter2-secret"}
    cache.save()  # as at the end of the run
    kept = (tmp_path / STATE_DIR / templatecache.FILE_NAME).read_text()
    assert "NoEcho" in kept
    assert "hunter2" not in kept


def test_a_run_that_stops_half_way_keeps_what_it_did_not_read(tmp_path: Path, template: Path) -> None:
    """A plan that fails at one service has not read the others: their entries stay, unless gone."""
    other = written(tmp_path / "services" / "job" / "template.yml", TEMPLATE)
    gone = written(tmp_path / "services" / "old" / "template.yml", TEMPLATE)
    cache_file = tmp_path / STATE_DIR / templatecache.FILE_NAME
    first = TemplateCache(cache_file, VERSION, 0.0)
    for path in (template, other, gone):
        first.load(path, Reader(path))
    first.save()
    gone.unlink()
    assert run(cache_file, template) == (PARSED, 0)
    assert set(json.loads(cache_file.read_text())["files"]) == {str(template), str(other)}
    assert run(cache_file, other) == (PARSED, 0)
