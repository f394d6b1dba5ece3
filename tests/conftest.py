"""Fixtures shared by several test modules."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator

import pytest


@pytest.fixture
def sock_path() -> Iterator[str]:
    """A control-socket path short enough for AF_UNIX (tmp_path can be too long)."""
    d = tempfile.mkdtemp(prefix="ctdc", dir="/tmp")
    yield os.path.join(d, "ctd.sock")
    shutil.rmtree(d, ignore_errors=True)
