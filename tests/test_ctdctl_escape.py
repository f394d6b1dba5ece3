"""ctdctl never lets data drive the operator's terminal: control characters and
line breaks in any field of any human-readable output are shown as escapes;
``--json`` keeps the data exact."""

from __future__ import annotations

import contextlib
import csv
import http.server
import inspect
import io
import json
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from functools import partial
from typing import Any

import pytest
import structlog
import trio

from ctd.control.protocol import Peer, Request
from ctd.control.server import serve_control
from ctd.ctdctl import admin as ctdctl_admin
from ctd.ctdctl import escape as ctdctl_escape
from ctd.ctdctl import render as ctdctl_render
from ctd.ctdctl import render_sharing as render_sharing
from ctd.ctdctl.main import main
from ctd.ctdctl.render import emit
from ctd.errors import CtdError
from tests import test_ctdctl as base
from tests import test_ctdctl_admin as admin
from tests.daemonproc import DaemonProc, short_tmpdir, wait_for

# ESC sequences (colour, clear screen, OSC window title ending in BEL), a forged
# row after CR/LF, a C1 CSI, DEL, bidi override, line and paragraph separators.
HOSTILE = "\x1b[31mRED\x1b[2J\x1b]0;pwned\x07\r\nFORGED  ROW\t\x9b1m\x7f\u202eeht\u2028\u2029\x00"
BENIGN = "x"  # the same data with plain text in place of HOSTILE: the line count to match


def _safe_char(c: str) -> bool:
    return c == "\n" or c.isprintable()


# Fields whose value is a map keyed by names (types, sources, plugins, actions...).
NAME_MAPS = frozenset({"by_type", "by_source", "sharing", "queues", "actions", "params"})


def _inject(data: Any, text: str, keys: bool, names: bool = False) -> Any:
    """``data`` with ``text`` appended to every string, and with ``keys`` to the keys of name maps too."""
    match data:
        case str():
            return data + text
        case dict():
            return {
                (k + text if names else k): _inject(v, text, keys, keys and k in NAME_MAPS) for k, v in data.items()
            }
        case list() | tuple():
            return [_inject(v, text, keys) for v in data]
        case _:
            return data


def _has_text(data: Any, keys: bool) -> bool:
    """Whether :func:`_inject` puts text anywhere in ``data``."""
    return _inject(data, "", keys) != _inject(data, "!", keys)


def _indicator_show() -> list[dict[str, Any]]:
    return [
        {
            **base.indicator("evil.example", tags=["c2"]),
            "comments": "seen in phishing",
            "reference": "https://ref.example/1",
            "deliveries": base.DELIVERIES,
        }
    ]


SAMPLES: dict[str, Any] = {
    "status": base.STATUS,
    "sources": [
        {**base.SOURCE, "last_error": "HTTP 403"},
        {**base.SOURCE, "state": "pulling", "progress": {"records": 10, "percent": 40.0, "eta_s": 3.0}},
    ],
    "sync": {
        "source": "feed1",
        "new": 5,
        "updated": 0,
        "invalid": 0,
        "retracted": 0,
        "batches": 1,
        "duration_s": 0.5,
        "error": "feed unreachable",
    },
    "reload": {"config_hash": "abc", "added": ["a"], "removed": ["b"], "changed": ["c"], "unchanged": ["d"]},
    "indicators_show": _indicator_show(),
    "indicators_table": [base.indicator("evil.example"), base.indicator("bad.example", sources=("f1", "f2"))],
    "rules_list": base.RULES,
    "rules_test": base.RULE_TEST,
    "sharing_list": [base.SHARING],
    "sharing_show": base.SHARING_SHOW,
    "sharing_sync": {
        "sharing": "to-file",
        "candidates": 12,
        "pushed": 9,
        "rejected": 1,
        "retracted": 2,
        "unshared": 0,
        "unchanged": False,
        "muted": False,
        "error": "destination refused",
    },
    "checkpoint_show": admin.CHECKPOINT,
    "checkpoint_set": {"source": "feed1", "last_run": "2026-01-01T00:00:00Z", "note": "the next pull starts"},
    "plugins_list": admin.PLUGINS,
    "plugins_check": {
        "plugin": "misp1",
        "ok": False,
        "message": "connection refused",
        "checks": [
            {"check": "connectivity", "ok": False, "message": "connection refused"},
            {"check": "sharing out (write)", "ok": True, "message": "params valid; out.txt writable"},
        ],
    },
    "retract": {"value": "evil.example", "source": "feed1", "retracted": 2, "until": None},
    "unretract": {"value": "evil.example", "source": None, "lifted": 1, "note": "counts again"},
    "mute": {"rule": "quiet", "muted_until": "2026-01-02T05:04:05Z"},
    "stats": admin.STATS,
}


def _renderers() -> dict[str, Callable[..., None]]:
    """Every human renderer of ctdctl: the functions taking ``(out, data)``."""
    found: dict[str, Callable[..., None]] = {}
    for module in (ctdctl_render, render_sharing, ctdctl_admin):
        for name, fn in inspect.getmembers(module, inspect.isfunction):
            if fn.__module__ == module.__name__ and list(inspect.signature(fn).parameters) == ["out", "data"]:
                found[name] = fn
    return found


def _render(fn: Callable[..., None], data: Any) -> str:
    out = io.StringIO()
    emit(out, data, False, fn)
    return out.getvalue()


def test_every_renderer_has_a_sample() -> None:
    """Each human renderer is covered below (a new table needs a sample here)."""
    assert sorted(_renderers()) == sorted(SAMPLES)


@pytest.mark.parametrize("keys", [False, True], ids=["values", "values+names"])
@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_renderer_escapes_every_field(name: str, keys: bool) -> None:
    """Hostile text in any field (or name used as a key) prints no control character and forges no line."""
    fn = _renderers()[name]
    hostile = _render(fn, _inject(SAMPLES[name], HOSTILE, keys))
    benign = _render(fn, _inject(SAMPLES[name], BENIGN, keys))
    assert [c for c in hostile if not _safe_char(c)] == []
    assert hostile.count("\n") == benign.count("\n")
    if _has_text(SAMPLES[name], keys):
        assert "\\x1b[31mRED\\x1b[2J\\x1b]0;pwned\\x07\\r\\nFORGED  ROW\\t\\x9b1m\\x7f\\u202e" in hostile


def test_escape_forms() -> None:
    """Named escapes for \\n \\r \\t, \\xNN below U+0100, \\uNNNN and \\UNNNNNNNN above; printable text unchanged."""
    escape = ctdctl_escape.escape
    assert escape("a\nb\rc\td") == "a\\nb\\rc\\td"
    assert escape("\x1b[0m\x07\x00\x7f\x9b") == "\\x1b[0m\\x07\\x00\\x7f\\x9b"
    assert escape("\u202e\u2028\u200b\U000e0001") == "\\u202e\\u2028\\u200b\\U000e0001"
    assert escape("évil.example ünïcode 中文 \\x1b") == "évil.example ünïcode 中文 \\x1b"


def test_escape_is_idempotent() -> None:
    """Escaping escaped text changes nothing (so nested renderers never double-escape)."""
    escape = ctdctl_escape.escape
    once = escape(HOSTILE)
    assert escape(once) == once


def test_json_output_is_exact_and_terminal_safe() -> None:
    """--json output decodes to exactly the daemon's data, yet holds no raw control character."""
    data = _inject(SAMPLES["sources"], HOSTILE, True)
    out = io.StringIO()
    emit(out, data, True, ctdctl_render.sources)
    text = out.getvalue()
    assert json.loads(text) == data
    assert [c for c in text if not (c.isprintable() or c in "\n ")] == []


def test_jsonl_export_is_exact_and_terminal_safe() -> None:
    """`indicators export` JSON lines decode exactly, one line per item, no raw control character."""
    items = [_inject(base.indicator("evil.example", tags=["c2"]), HOSTILE, False)] * 2
    out = io.StringIO()
    ctdctl_render.write_jsonl(out, items)
    lines = out.getvalue().splitlines()
    assert [json.loads(line) for line in lines] == items
    assert [c for c in out.getvalue() if not _safe_char(c)] == []


def _csv_item() -> dict[str, Any]:
    return {**base.indicator("evil.example", tags=["c2" + HOSTILE]), "value": "evil.example" + HOSTILE}


def test_csv_exact_when_not_on_a_terminal() -> None:
    """CSV written to a file or pipe keeps every value exact (quoted as CSV needs)."""
    out = io.StringIO()
    ctdctl_render.write_csv(out, [_csv_item()])
    rows = list(csv.reader(io.StringIO(out.getvalue())))
    assert rows[1][1] == "evil.example" + HOSTILE and rows[1][9] == "c2" + HOSTILE


def test_csv_escaped_on_a_terminal() -> None:
    """CSV read on a terminal shows control characters as escapes, one line per indicator."""
    out = io.StringIO()
    ctdctl_render.write_csv(out, [_csv_item(), _csv_item()], terminal=True)
    text = out.getvalue()
    assert [c for c in text if not _safe_char(c)] == [] and text.count("\n") == 3
    assert "evil.example\\x1b[31mRED" in text


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


# --- through the real client and server ----------------------------------------


class HostileDaemon:
    """Answers with hostile strings: a version, an error, a failed sync."""

    async def __call__(self, request: Request, peer: Peer) -> Any:
        match request.cmd:
            case "version":
                return {**admin.VERSION, "version": "9" + HOSTILE}
            case "indicators.export":
                return self._export()
            case "sync":
                return {
                    "source": request.args["source"],
                    "new": 0,
                    "updated": 0,
                    "invalid": 0,
                    "retracted": 0,
                    "batches": 0,
                    "duration_s": 0.1,
                    "error": "upstream said" + HOSTILE,
                }
            case _:
                raise CtdError("no source named" + HOSTILE)

    async def _export(self) -> AsyncIterator[dict[str, Any]]:
        yield _csv_item()


@pytest.fixture
async def hostile(nursery: trio.Nursery, sock_path: str) -> AsyncIterator[str]:
    with structlog.testing.capture_logs():
        await nursery.start(partial(serve_control, sock_path, HostileDaemon()))
        yield sock_path


async def _ctdctl(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    rc = await trio.to_thread.run_sync(lambda: main(list(argv)))
    cap = capsys.readouterr()
    return rc, cap.out, cap.err


async def test_daemon_error_message_escaped(hostile: str, capsys: pytest.CaptureFixture[str]) -> None:
    """An error reply carrying control characters reaches stderr escaped, on one line."""
    rc, _, err = await _ctdctl(capsys, "--socket", hostile, "checkpoint", "show", "x")
    assert rc == 2
    assert [c for c in err if not _safe_char(c)] == [] and err.count("\n") == 1
    assert "no source named\\x1b[31mRED" in err


async def test_sync_error_on_stderr_escaped(hostile: str, capsys: pytest.CaptureFixture[str]) -> None:
    """A failed sync's error (source-controlled text) is escaped on stdout and stderr."""
    rc, out, err = await _ctdctl(capsys, "--socket", hostile, "sync", "feed1")
    assert rc == 2
    assert [c for c in out + err if not _safe_char(c)] == []
    assert err.count("\n") == 1 and "upstream said\\x1b[31mRED" in err


async def test_version_escaped(hostile: str, capsys: pytest.CaptureFixture[str]) -> None:
    """`version` prints the daemon's version strings escaped; --json keeps them exact."""
    rc, out, _ = await _ctdctl(capsys, "--socket", hostile, "version")
    assert rc == 0 and [c for c in out if not _safe_char(c)] == []
    assert "9\\x1b[31mRED" in out
    rc, out, _ = await _ctdctl(capsys, "--socket", hostile, "--json", "version")
    assert json.loads(out)["daemon"]["version"] == "9" + HOSTILE


async def test_export_csv_to_a_terminal_escaped(hostile: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """`indicators export --format csv` on a terminal escapes; piped it stays exact."""
    for tty in (True, False):
        out = _Terminal() if tty else io.StringIO()
        monkeypatch.setattr("sys.stdout", out)
        rc = await trio.to_thread.run_sync(
            lambda: main(["--socket", hostile, "indicators", "export", "--format", "csv"])
        )
        assert rc == 0
        text = out.getvalue()
        if tty:
            assert [c for c in text if not _safe_char(c)] == [] and text.count("\n") == 2
        else:
            assert list(csv.reader(io.StringIO(text)))[1][1] == "evil.example" + HOSTILE


# --- end to end: the real daemon, a hostile MISP server ---------------------------

# Both reach ctdctl without passing the ingest gate: a plugin name from the
# config and the error message a (hostile or compromised) MISP server returns.
PLUGIN = "misp\x1b[31m\nFORGED"
MISP_MESSAGE = "\x1b]0;pwned\x07\x1b[2J\r\nsource  FORGED  ROW"


@contextlib.contextmanager
def hostile_misp() -> Iterator[str]:
    """A MISP stand-in on 127.0.0.1 refusing every call with a 403 whose message is hostile."""

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("content-length") or 0))
            body = json.dumps({"name": "Forbidden", "message": MISP_MESSAGE, "url": self.path}).encode()
            self.send_response(403)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_POST

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_daemon_source_error_and_plugin_name_escaped() -> None:
    """Through the real daemon: a hostile plugin name and MISP error print escaped in every table; --json is exact."""
    with hostile_misp() as url:
        d = DaemonProc(
            short_tmpdir(), f'[plugins.{json.dumps(PLUGIN)}]\nadapter = "misp"\nurl = "{url}"\napi_key = "k"\n'
        )
        try:
            d.start().wait_ready()
            sources = wait_for(
                lambda: (s := d.ctl_json("sources"))[0].get("last_error") and s, "the MISP source to fail"
            )
            # An error text is one line (line breaks and runs of blanks folded); its control characters stay.
            assert sources[0]["name"] == PLUGIN and " ".join(MISP_MESSAGE.split()) in sources[0]["last_error"]
            for argv in (("status",), ("sources",), ("plugins", "list"), ("checkpoint", "show", PLUGIN), ("stats",)):
                r = d.ctl(*argv)
                assert r.returncode == 0, r.stderr
                assert [c for c in r.stdout if not _safe_char(c)] == [], argv
                assert "FORGED" not in [line.split(" ")[0] for line in r.stdout.splitlines()], argv
                assert "misp\\x1b[31m\\nFORGED" in r.stdout, argv
            out = d.ctl("sources").stdout
            assert "\\x1b]0;pwned\\x07\\x1b[2J source FORGED ROW" in out
            assert len(out.splitlines()) == 2  # header and the one source
            r = d.ctl("sync", PLUGIN)
            assert [c for c in r.stdout + r.stderr if not _safe_char(c)] == []
            assert d.stop() == 0
        finally:
            d.cleanup()
