"""`ctdctl plugins check` of a destination-only plugin checks what it writes (issue 13, finding 6)."""

from __future__ import annotations

import pytest

from tests.daemonproc import DaemonProc, short_tmpdir

CONFIG = """
[plugins.lists]
adapter = "file"
pull = false

[rules.all]
filter = "type = url"

[sharing.urls]
sources = ["lists"]
rule = "all"
destination = "lists"
action = "write"
params = {{ path = "{out}/urls.txt" }}
"""


@pytest.fixture
def workdir():
    d = short_tmpdir()
    yield d
    import shutil

    shutil.rmtree(d, ignore_errors=True)


def test_destination_only_file_plugin_is_checkable(workdir) -> None:
    """The demo's `lists` plugin checks ok: no source file to open, its sharing target is writable."""
    d = DaemonProc(workdir, CONFIG.format(out=workdir / "out"))
    try:
        d.start().wait_ready()
        r = d.ctl("plugins", "check", "lists")
        assert r.returncode == 0, (r.stdout, r.stderr)
        assert "No such file" not in r.stdout
        assert r.stdout.startswith("lists: ok - sharing urls (write): params valid") and "writable" in r.stdout
        [check] = d.ctl_json("plugins", "check", "lists")["checks"]
        assert check["check"] == "sharing urls (write)" and check["ok"]
        (workdir / "afile").write_text("")  # a file where the list's directory should be: even root cannot
        d.write_config(CONFIG.format(out=workdir / "afile" / "sub"))
        assert d.ctl("reload").returncode == 0
        r = d.ctl("plugins", "check", "lists")
        assert r.returncode == 2 and "FAILED" in r.stdout and "is not a directory" in r.stdout
    finally:
        d.cleanup()
