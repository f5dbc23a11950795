"""The real Serverless Framework for the tests: osls, installed by .ci/install-osls into .tools/osls."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.conftest import REPO

INSTALLED = REPO / ".tools" / "osls" / "node_modules" / ".bin" / "osls"
INSTALL = ".ci/install-osls"


def osls() -> Path:
    """The framework's executable: skips the test without Node.js, fails it when Node.js is there but not osls."""
    if shutil.which("node") is None:
        pytest.skip("Node.js is not installed: the Serverless Framework (osls) cannot run here")
    if INSTALLED.is_file():
        return INSTALLED
    on_path = shutil.which("osls")
    if on_path:
        return Path(on_path)
    pytest.fail(f"the Serverless Framework (osls) is not installed: run {INSTALL} (it needs Node.js and npm)")
