"""Tests for ctd.service.journal (journald native protocol) and its wiring in ctd.service.logs.

The last test runs the real daemon against a real ``systemd-journald``
namespace instance, its stderr connected to the journal's stdout stream just as
systemd would, and reads the entries back with ``journalctl``.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import secrets
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import structlog

from ctd.service import journal as journal
from ctd.service import logs as logs
from ctd.service.logs import configure_logging, get_logger
from tests.daemonproc import env, short_tmpdir, stop_process, wait_for

# --- encoding -----------------------------------------------------------------


def test_simple_field_bytes():
    assert journal.encode_field("MESSAGE", "hello world") == b"MESSAGE=hello world\n"
    assert journal.encode_field("PRIORITY", 6) == b"PRIORITY=6\n"
    assert journal.encode_field("X", "") == b"X=\n"


def test_multiline_field_bytes():
    """A value with a newline: KEY\\n<u64 LE length><bytes>\\n."""
    assert journal.encode_field("CTD_EXCEPTION", "a\nbc") == b"CTD_EXCEPTION\n" + b"\x04" + b"\x00" * 7 + b"a\nbc\n"
    data = "é\n".encode()
    assert journal.encode_field("M", "é\n") == b"M\n" + struct.pack("<Q", len(data)) + data + b"\n"


def test_structured_values_json_encoded():
    assert journal.encode_field("CTD_L", ["a", 1]) == b'CTD_L=["a",1]\n'
    assert journal.encode_field("CTD_D", {"k": None}) == b'CTD_D={"k":null}\n'
    assert journal.encode_field("CTD_B", True) == b"CTD_B=true\n"


def test_field_name_sanitised():
    assert journal.field_name("ctd_event") == "CTD_EVENT"
    assert journal.field_name("logger-name.x") == "LOGGER_NAME_X"
    assert journal.field_name("__priv") == "PRIV"
    assert len(journal.field_name("k" * 100)) == 64
    assert journal.ctd_field("ctd_source") == "CTD_SOURCE"
    assert journal.ctd_field("pid") == "CTD_PID"
    assert journal.ctd_field("_TRANSPORT") == "CTD_TRANSPORT"  # never one of journald's own
    assert journal.ctd_field("exception") == "CTD_EXCEPTION"
    assert len(journal.ctd_field("x" * 100)) == 64


@pytest.mark.parametrize(
    "level,prio", [("debug", 7), ("info", 6), ("warning", 4), ("warn", 4), ("error", 3), ("critical", 2), ("odd", 6)]
)
def test_priority_mapping(level, prio):
    assert journal.priority(level) == prio


def test_entry_fields():
    fields = journal.entry_fields(
        {"ts": "t", "level": "warning", "event": "pulled", "ctd_event": "x", "ctd_count": 3, "logger_name": "n"}
    )
    assert fields == [
        ("MESSAGE", "pulled"),
        ("PRIORITY", 4),
        ("SYSLOG_IDENTIFIER", "ctd"),
        ("CTD_EVENT", "x"),
        ("CTD_COUNT", 3),
        ("CTD_LOGGER_NAME", "n"),
    ]


# --- detection ----------------------------------------------------------------


def test_detection_missing(monkeypatch, tmp_path):
    monkeypatch.delenv("JOURNAL_STREAM", raising=False)
    with open(tmp_path / "f", "w") as f:
        assert not journal.stream_is_journal(f)


def test_detection_mismatch(monkeypatch, tmp_path):
    with open(tmp_path / "f", "w") as f:
        st = os.fstat(f.fileno())
        monkeypatch.setenv("JOURNAL_STREAM", f"{st.st_dev}:{st.st_ino + 1}")
        assert not journal.stream_is_journal(f)
        monkeypatch.setenv("JOURNAL_STREAM", "garbage")
        assert not journal.stream_is_journal(f)


def test_detection_match_socketpair(monkeypatch):
    a, b = socket.socketpair()
    with a, b, a.makefile("w") as f:
        st = os.fstat(a.fileno())
        monkeypatch.setenv("JOURNAL_STREAM", f"{st.st_dev}:{st.st_ino}")
        assert journal.stream_is_journal(f)
        assert not journal.stream_is_journal(b.makefile("w"))


def test_detection_stream_without_fd(monkeypatch):
    import io

    monkeypatch.setenv("JOURNAL_STREAM", "1:2")
    assert not journal.stream_is_journal(io.StringIO())


# --- sending ------------------------------------------------------------------


@pytest.fixture
def server():
    d = short_tmpdir()
    path = str(d / "journal.sock")
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.bind(path)
    s.settimeout(5)
    yield s, path
    s.close()
    shutil.rmtree(d, ignore_errors=True)


def test_sender_datagram(server):
    srv, path = server
    sender = journal.JournalSender(path)
    try:
        payload = journal.encode_fields([("MESSAGE", "hi"), ("CTD_EXCEPTION", "a\nb")])
        sender.send(payload)
        assert srv.recv(65536) == b"MESSAGE=hi\nCTD_EXCEPTION\n" + struct.pack("<Q", 3) + b"a\nb\n"
        assert sender._sock is not None and sender._sock.get_inheritable() is False
    finally:
        sender.close()


def test_oversized_entry_sent_as_memfd(server):
    srv, path = server
    sender = journal.JournalSender(path)
    try:
        payload = journal.encode_fields([("MESSAGE", "big"), ("CTD_BLOB", "x" * 400_000)])
        sender.send(payload)
        msg, fds, _flags, _addr = socket.recv_fds(srv, 1024, 4)
        assert msg == b"" and len(fds) == 1
        try:
            size = os.fstat(fds[0]).st_size
            assert size == len(payload)
            assert os.pread(fds[0], size, 0) == payload
            assert fcntl.fcntl(fds[0], fcntl.F_GET_SEALS) & fcntl.F_SEAL_WRITE
        finally:
            os.close(fds[0])
    finally:
        sender.close()


def test_sender_raises_oserror_without_journald(tmp_path):
    sender = journal.JournalSender(str(tmp_path / "nope.sock"))
    try:
        with pytest.raises(OSError):
            sender.send(b"MESSAGE=x\n")
    finally:
        sender.close()


# --- wired into ctd.service.logs ------------------------------------------------------


@pytest.fixture
def journal_stream(monkeypatch, tmp_path):
    """A file standing in for stderr whose dev:ino is $JOURNAL_STREAM."""
    f = open(tmp_path / "stderr", "w")
    st = os.fstat(f.fileno())
    monkeypatch.setenv("JOURNAL_STREAM", f"{st.st_dev}:{st.st_ino}")
    yield f
    structlog.contextvars.clear_contextvars()
    structlog.reset_defaults()
    if logs._sender is not None:
        logs._sender.close()
        logs._sender = None
    f.close()


def _parse(datagram: bytes) -> dict[str, list[bytes]]:
    out: dict[str, list[bytes]] = {}
    i = 0
    while i < len(datagram):
        nl = datagram.index(b"\n", i)
        line = datagram[i:nl]
        if b"=" in line:
            k, v = line.split(b"=", 1)
            i = nl + 1
        else:
            k = line
            (n,) = struct.unpack("<Q", datagram[nl + 1 : nl + 9])
            v = datagram[nl + 9 : nl + 9 + n]
            assert datagram[nl + 9 + n : nl + 10 + n] == b"\n"
            i = nl + 10 + n
        out.setdefault(k.decode(), []).append(v)
    return out


def test_logs_use_journal_when_stream_is_journal(journal_stream, server, monkeypatch):
    """Entries become native datagrams with indexed CTD_* fields; secrets redacted first."""
    srv, path = server
    monkeypatch.setenv("CTD_JOURNAL_SOCKET", path)
    configure_logging("debug", stream=journal_stream)
    structlog.contextvars.bind_contextvars(ctd_source="feed-a")
    log = get_logger("ctd.test")
    log.warning("pulled", ctd_event="source_pull_completed", ctd_count=3, token="s3cr3t", tags=["a", "b"])
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        log.exception("failed", ctd_event="x_failed")
    first, second = _parse(srv.recv(65536)), _parse(srv.recv(65536))
    assert first["MESSAGE"] == [b"pulled"] and first["PRIORITY"] == [b"4"]
    assert first["SYSLOG_IDENTIFIER"] == [b"ctd"]
    assert first["CTD_EVENT"] == [b"source_pull_completed"] and first["CTD_COUNT"] == [b"3"]
    assert first["CTD_SOURCE"] == [b"feed-a"] and first["CTD_LOGGER_NAME"] == [b"ctd.test"]
    assert first["CTD_TOKEN"] == [b"***"] and first["CTD_TAGS"] == [b'["a","b"]']
    assert second["PRIORITY"] == [b"3"] and b"RuntimeError: boom" in second["CTD_EXCEPTION"][0]
    assert b"\n" in second["CTD_EXCEPTION"][0]
    journal_stream.flush()
    assert Path(journal_stream.name).read_text() == ""  # nothing went to stderr


def test_logs_fall_back_to_json_line(journal_stream, monkeypatch, tmp_path):
    """journald unreachable: the entry is written as a JSON line to stderr, nothing raises."""
    monkeypatch.setenv("CTD_JOURNAL_SOCKET", str(tmp_path / "missing.sock"))
    configure_logging("info", stream=journal_stream)
    get_logger().info("still here", ctd_event="e", password="pw")
    [line] = Path(journal_stream.name).read_text().splitlines()
    entry = json.loads(line)
    assert entry["event"] == "still here" and entry["ctd_event"] == "e" and entry["password"] == "***"


def test_logs_json_when_journal_stream_mismatches(journal_stream, monkeypatch, server):
    srv, path = server
    monkeypatch.setenv("CTD_JOURNAL_SOCKET", path)
    monkeypatch.setenv("JOURNAL_STREAM", "1:2")
    configure_logging("info", stream=journal_stream)
    get_logger().info("plain")
    assert json.loads(Path(journal_stream.name).read_text())["event"] == "plain"


# --- the real journal -----------------------------------------------------------

JOURNALD = "/lib/systemd/systemd-journald"


def cannot_run(reason: str) -> None:
    """Skip where a real journald is impossible; in CI (root, systemd installed) that is a failure."""
    if os.environ.get("CI"):
        pytest.fail(f"the real-journald test must run in CI: {reason}")
    pytest.skip(reason)


@pytest.fixture
def journald_ns():
    """A throw-away systemd-journald namespace instance; yields (namespace, run dir)."""
    if os.geteuid() != 0:
        cannot_run("needs root to start a systemd-journald namespace instance")
    if not os.access(JOURNALD, os.X_OK) or shutil.which("journalctl") is None:
        cannot_run(f"{JOURNALD} or journalctl not installed")
    mid_file = Path("/etc/machine-id")
    machine_id = mid_file.read_text().strip() if mid_file.exists() else ""
    if not machine_id:
        cannot_run("/etc/machine-id missing or empty: journald cannot start (not creating one)")
    ns = "ctdtest" + secrets.token_hex(4)
    rundir = Path(f"/run/systemd/journal.{ns}")
    out = tempfile.TemporaryFile()
    jenv = {k: v for k, v in os.environ.items() if k not in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")}

    def listening() -> bool:
        return (rundir / "socket").exists() and (rundir / "stdout").exists()

    proc = subprocess.Popen([JOURNALD, ns], stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, env=jenv)
    try:
        with contextlib.suppress(AssertionError):
            wait_for(lambda: proc.poll() is not None or listening(), f"systemd-journald {ns}", timeout=10)
        if not listening():
            out.seek(0)
            cannot_run(f"systemd-journald {ns} did not start (rc={proc.poll()}): {out.read().decode()[-2000:]}")
        yield ns, rundir
    finally:
        stop_process(proc)
        out.close()
        shutil.rmtree(rundir, ignore_errors=True)
        for base in ("/var/log/journal", "/run/log/journal"):
            shutil.rmtree(f"{base}/{machine_id}.{ns}", ignore_errors=True)


def _journal_entries(ns: str) -> list[dict]:
    r = subprocess.run(
        ["journalctl", f"--namespace={ns}", "-o", "json", "--all", "--no-pager"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    return [json.loads(line) for line in r.stdout.splitlines() if line.startswith("{")]


def _wait_entries(ns: str, pred, what: str, timeout: float = 15.0) -> list[dict]:
    def ctd_entries() -> list[dict]:
        return [e for e in _journal_entries(ns) if e.get("SYSLOG_IDENTIFIER") == "ctd"]

    def shown() -> tuple[list[dict]] | None:
        entries = ctd_entries()
        return (entries,) if pred(entries) else None

    [entries] = wait_for(
        shown, lambda: f"the journal to show {what}; ctd entries:\n" + "\n".join(map(str, ctd_entries())), timeout
    )
    return entries


def _events(entries: list[dict], name: str) -> list[dict]:
    return [e for e in entries if e.get("CTD_EVENT") == name]


def test_real_journald_native_entries(journald_ns):
    """The daemon, stderr on a journal stdout stream, logs native entries with indexed fields."""
    ns, rundir = journald_ns
    workdir = short_tmpdir()
    (workdir / "feed.txt").write_text("evil.example\n203.0.113.7\nnot an indicator at all!!\n")
    (workdir / "ctd.toml").write_text(
        f'[daemon]\nstate_dir = "{workdir}/var"\nsocket = "{workdir}/ctd.sock"\nlog_level = "debug"\n\n'
        '[plugins.feed]\nadapter = "file"\npath = "feed.txt"\nsync_interval = "1h"\n\n'
        '[plugins.gone]\nadapter = "file"\npath = "missing.txt"\nsync_interval = "1h"\n'
    )
    # What systemd does for StandardError=journal: connect to the stdout stream,
    # send the 7-line header, hand the socket over as fd 1 and 2, set JOURNAL_STREAM.
    stream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    proc = None
    try:
        stream.connect(str(rundir / "stdout"))
        stream.sendall(b"ctd\n\n6\n1\n0\n0\n0\n")
        st = os.fstat(stream.fileno())
        proc = subprocess.Popen(
            [sys.executable, "-m", "ctd", "run", "--config", str(workdir / "ctd.toml")],
            cwd=workdir,
            stdin=subprocess.DEVNULL,
            stdout=stream.fileno(),
            stderr=stream.fileno(),
            env=env(JOURNAL_STREAM=f"{st.st_dev}:{st.st_ino}", CTD_JOURNAL_SOCKET=str(rundir / "socket")),
        )
        _wait_entries(ns, lambda es: _events(es, "source_pull_completed"), "source_pull_completed")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
        entries = _wait_entries(ns, lambda es: _events(es, "daemon_stopped"), "daemon_stopped")
    finally:
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()
        stream.close()
        shutil.rmtree(workdir, ignore_errors=True)

    # Every ctd entry came over the native protocol, none as stdout-stream lines.
    assert {e["_TRANSPORT"] for e in entries} == {"journal"}, [e for e in entries if e["_TRANSPORT"] != "journal"]
    assert all(e["_PID"] == str(proc.pid) for e in entries)

    [start] = _events(entries, "daemon_start")
    assert start["MESSAGE"] == "daemon starting" and start["PRIORITY"] == "6"
    assert len(start["CTD_CONFIG_HASH"]) >= 8 and start["CTD_PID"] == str(proc.pid)

    [pulled] = [e for e in _events(entries, "source_pull_completed") if e.get("CTD_SOURCE") == "feed"]
    assert pulled["PRIORITY"] == "6" and pulled["CTD_COUNT"] == "2" and pulled["CTD_NEW"] == "2"

    debug = [e for e in _events(entries, "batch_ingested") if e.get("CTD_SOURCE") == "feed"]
    assert debug and debug[0]["PRIORITY"] == "7"
    [rejected] = _events(entries, "indicators_rejected_invalid")
    assert rejected["PRIORITY"] == "4" and rejected["CTD_SOURCE"] == "feed" and rejected["CTD_COUNT"] == "1"
    assert json.loads(rejected["CTD_EXAMPLES"])  # a list, JSON-encoded
    failed = [e for e in _events(entries, "source_pull_failed") if e.get("CTD_SOURCE") == "gone"]
    assert failed and failed[0]["PRIORITY"] == "3"

    # journalctl can filter on the indexed fields.
    r = subprocess.run(
        ["journalctl", f"--namespace={ns}", "-o", "json", "--no-pager", "CTD_EVENT=daemon_start"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert [json.loads(x)["CTD_EVENT"] for x in r.stdout.splitlines()] == ["daemon_start"]


def test_real_journald_oversized_entry_via_memfd(journald_ns):
    """A 400 KB entry exceeds a datagram; real journald accepts it as a sealed memfd."""
    ns, rundir = journald_ns
    sender = journal.JournalSender(str(rundir / "socket"))
    try:
        sender.send(
            journal.encode_fields(
                [
                    ("MESSAGE", "big one"),
                    ("SYSLOG_IDENTIFIER", "ctd"),
                    ("CTD_EVENT", "big"),
                    ("CTD_BLOB", "x" * 400_000),
                ]
            )
        )
    finally:
        sender.close()
    entries = _wait_entries(ns, lambda es: _events(es, "big"), "the oversized entry")
    [big] = _events(entries, "big")
    assert big["_TRANSPORT"] == "journal" and big["CTD_BLOB"] == "x" * 400_000
