"""A state file that cannot be written (a full disk) is one line and exit 1, and loses nothing that counts:
what deployed is tagged on its stack, so the next run skips it."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import REPO, Moto, doit, sample_app
from tests.faults import running_layer


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 256 KiB file system for the app's .phasedoit (a tmpfs: needs root, as on this project's machines)."""
    folder = tmp_path / "app" / ".phasedoit"
    folder.mkdir(parents=True)
    if os.geteuid() != 0:
        pytest.skip("mounting a small file system needs root")
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(folder)], check=True)
    try:
        yield folder
    finally:
        subprocess.run(["umount", str(folder)], check=True)


def fill(folder: Path) -> None:
    with (folder / "fill").open("wb", buffering=0) as out:
        try:
            while True:
                out.write(b"\0" * 4096)
        except OSError:
            pass  # full


def app_in(tmp_path: Path) -> Path:
    sample_app(tmp_path / "app")
    shutil.copy(REPO / "dodo.py", tmp_path / "app" / "dodo.py")
    return tmp_path / "app"


def test_a_full_disk_stops_the_run_before_anything_deploys(
    tmp_path: Path, small_disk: Path, moto: Moto, aws_env: dict[str, str]
) -> None:
    app = app_in(tmp_path)
    fill(small_disk)
    result = doit(app, "-n", "4", "deploy")
    assert (result.returncode, result.stdout) == (1, "")
    assert result.stderr == (
        f"phasedoit: cannot use its state file {small_disk / 'doit-dev.db'}: database or disk is full\n"
    )
    assert moto.client().describe_stacks()["Stacks"] == []


def test_a_disk_full_at_the_end_loses_nothing_that_deployed(
    tmp_path: Path, small_disk: Path, moto: Moto, aws_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    app = app_in(tmp_path)
    with running_layer(moto.url) as slow:
        slow.latency(0.5)
        monkeypatch.setenv("AWS_ENDPOINT_URL", slow.url)
        monkeypatch.setenv("AWS_ENDPOINT_URL_S3", moto.url)  # the layer is CloudFormation's
        run = subprocess.Popen(
            [sys.executable, "-m", "doit", "-n", "4", "deploy"], cwd=app, stderr=subprocess.PIPE, text=True
        )
        assert run.stderr is not None
        for line in run.stderr:
            if line.startswith("checkout-api: creating"):
                break
        fill(small_disk)  # while the first phase deploys: doit saves its state at the end
        rest = run.communicate(timeout=60)[1]
        assert run.returncode == 1
        assert rest.splitlines()[-1] == (
            f"phasedoit: cannot save its state file {small_disk / 'doit-dev.db'}: database or disk is full"
            " (what deployed is tagged on its stacks: the next run sees it)"
        )
    (small_disk / "fill").unlink()
    with running_layer(moto.url) as proxy:
        monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.url)
        again = doit(app, "-n", "4", "deploy")
        assert again.returncode == 0, again.stderr
        assert proxy.written() == []
