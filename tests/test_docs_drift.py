"""Docs drift leftovers of issue 13: plural days, completion and --json, the edl docstring."""

from __future__ import annotations

import io

import pytest

from ctd.ctdctl import render_sharing
from ctd.ctdctl.main import main
from tests.daemonproc import REPO


@pytest.mark.parametrize(("days", "text"), [(1, "seen in the last 1 day "), (7, "seen in the last 7 days ")])
def test_rules_test_says_day_or_days(days: int, text: str) -> None:
    """`rules test --days 1` says "1 day", not "1 days"."""
    out = io.StringIO()
    render_sharing.rules_test(out, {"rule": "r", "total": 3, "bytes": 9, "days": days})
    assert text in out.getvalue()


@pytest.mark.parametrize("argv", [["--json", "completion", "bash"], ["completion", "bash", "--json"]])
def test_completion_refuses_json_wherever_it_stands(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    """--json before or after `completion bash` is the same usage error (it is never silently ignored)."""
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    assert capsys.readouterr().out == ""


def test_edl_docstring_names_its_server_module() -> None:
    """The edl adapter's docstring names adapters/edl/server.py, which exists (not adapters/edl_server.py)."""
    text = (REPO / "adapters" / "edl" / "adapter.py").read_text()
    assert "edl_server.py" not in text and "adapters/edl/server.py" in text
    assert (REPO / "adapters" / "edl" / "server.py").exists()
