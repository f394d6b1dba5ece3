"""The daemon as a real subprocess: ingest, ctdctl, reload, stop, crash recovery."""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import sys

import pytest

from tests.daemonproc import REPO, DaemonProc, env, short_tmpdir, wait_for

FEEDS = """
[plugins.osint]
adapter = "file"
path = "osint.txt"
sync_interval = "1h"
aging_days = 30

[plugins.partner]
adapter = "file"
path = "partner.jsonl"
format = "jsonl"
sync_interval = "1h"
reputation = 8
"""


@pytest.fixture
def daemon():
    d = DaemonProc(short_tmpdir(), FEEDS)
    (d.dir / "osint.txt").write_text("# demo\nevil.example\nhxxp://bad[.]example/x\n203.0.113.7\n")
    (d.dir / "partner.jsonl").write_text(
        '{"value": "evil.example", "severity": "high", "tags": ["c2"]}\n'
        '{"value": "d41d8cd98f00b204e9800998ecf8427e", "type": "md5"}\n'
    )
    yield d
    d.cleanup()


def pulls(d: DaemonProc, source: str) -> list[dict]:
    return [e for e in d.logs() if e.get("ctd_event") == "source_pull_completed" and e.get("ctd_source") == source]


class TestRunning:
    def test_ingests_and_shows_provenance(self, daemon):
        """The daemon ingests both feeds; ctdctl shows one indicator with two sources."""
        daemon.start().wait_ready()
        wait_for(lambda: pulls(daemon, "osint") and pulls(daemon, "partner"), what="first pulls")
        [ind] = daemon.ctl_json("indicators", "show", "evil.example")
        assert ind["type"] == "domain" and ind["active"]
        assert [s["source"] for s in ind["sources"]] == ["osint", "partner"]
        assert ind["severity"] == "high" and ind["reputation"] == 8  # the higher-reputation source wins
        assert ind["expires_at"].endswith("Z")
        assert daemon.stop() == 0

    def test_status_search_export(self, daemon):
        """status counts by type, search filters by source, export streams jsonl and csv."""
        daemon.start().wait_ready()
        wait_for(lambda: pulls(daemon, "osint") and pulls(daemon, "partner"), what="first pulls")
        st = daemon.ctl_json("status")
        assert st["indicators"]["total"] == 4
        assert st["indicators"]["by_type"]["url"]["active"] == 1
        assert {s["name"] for s in st["sources"]} == {"osint", "partner"}
        found = daemon.ctl_json("indicators", "search", "--source", "partner")
        assert {i["value"] for i in found} == {"evil.example", "d41d8cd98f00b204e9800998ecf8427e"}
        r = daemon.ctl("indicators", "export", "--format", "jsonl")
        rows = [json.loads(line) for line in r.stdout.splitlines()]
        assert len(rows) == 4 and all("sources" in x for x in rows)
        r = daemon.ctl("indicators", "export", "--format", "csv")
        assert r.stdout.splitlines()[0].startswith("type,value,active")
        assert len(r.stdout.splitlines()) == 5
        daemon.stop()

    def test_sync_pulls_now(self, daemon):
        """`ctdctl sync SOURCE` pulls at once and prints the counts."""
        daemon.start().wait_ready()
        wait_for(lambda: pulls(daemon, "osint"), what="first pull")
        (daemon.dir / "osint.txt").write_text("new.example\n")
        res = daemon.ctl_json("sync", "osint")
        assert res["new"] == 1 and res["retracted"] == 3 and res["error"] is None
        daemon.stop()

    def test_sigterm_exits_zero(self, daemon):
        """SIGTERM stops the daemon gracefully with exit code 0 and removes its socket."""
        daemon.start().wait_ready()
        assert daemon.stop() == 0
        assert not daemon.socket.exists()
        assert any(e.get("ctd_event") == "daemon_stop" for e in daemon.logs())

    def test_sigint_exits_zero(self, daemon):
        """SIGINT (Ctrl-C) also stops gracefully with exit code 0."""
        daemon.start().wait_ready()
        daemon.signal(signal.SIGINT)
        assert daemon.proc.wait(30) == 0

    def test_no_daemon_hint(self, tmp_path):
        """ctdctl without a daemon prints a one-line hint and exits 1."""
        r = subprocess.run(
            [sys.executable, "-m", "ctd.ctdctl.main", "--socket", str(tmp_path / "none.sock"), "status"],
            capture_output=True,
            text=True,
            env=env(),
        )
        assert r.returncode == 1
        assert "is the daemon running" in r.stderr and len(r.stderr.strip().splitlines()) == 1


class TestReload:
    def test_sighup_adds_source(self, daemon):
        """SIGHUP with a valid new config starts the added source without a restart."""
        daemon.start().wait_ready()
        pid = daemon.ctl_json("status")["pid"]
        (daemon.dir / "extra.txt").write_text("added.example\n")
        daemon.write_config(FEEDS + '\n[plugins.extra]\nadapter = "file"\npath = "extra.txt"\n')
        daemon.signal(signal.SIGHUP)
        wait_for(lambda: pulls(daemon, "extra"), what="new source pull")
        assert daemon.ctl_json("status")["pid"] == pid
        assert daemon.ctl_json("indicators", "show", "added.example")[0]["active"]
        reloads = [e for e in daemon.logs() if e.get("ctd_event") == "config_reloaded"]
        assert reloads and reloads[-1]["added"] == ["extra"]
        daemon.stop()

    def test_invalid_reload_keeps_running_config(self, daemon):
        """`ctdctl reload` of a broken file exits 2 with the location; the old config keeps running."""
        daemon.start().wait_ready()
        old_hash = daemon.ctl_json("status")["config_hash"]
        daemon.write_config(FEEDS + "aging_days = 999\n")
        r = daemon.ctl("reload")
        assert r.returncode == 2
        assert "$.plugins.partner.aging_days" in r.stderr
        st = daemon.ctl_json("status")
        assert st["config_hash"] == old_hash and len(st["sources"]) == 2
        [rejected] = [e for e in daemon.logs() if e.get("ctd_event") == "config_rejected"]
        assert rejected["running_config_hash"] == old_hash and rejected["ctd_config_hash"] != old_hash
        daemon.stop()

    def test_sighup_invalid_keeps_running(self, daemon):
        """A SIGHUP with a broken file is logged and the daemon keeps serving."""
        daemon.start().wait_ready()
        daemon.write_config("this is not toml")
        daemon.signal(signal.SIGHUP)
        wait_for(lambda: any(e.get("ctd_event") == "config_rejected" for e in daemon.logs()), what="rejection")
        assert daemon.ctl_rc("status") == 0
        daemon.stop()


class TestOnce:
    def test_demo_config_once(self, tmp_path):
        """`ctd run --once --config etc/ctd.toml` exits 0 and prints a summary per plugin."""
        cfg = (REPO / "etc" / "ctd.toml").read_text().replace('state_dir = "var"', f'state_dir = "{tmp_path}/var"')
        cfg = cfg.replace('socket = "var/ctd.sock"', f'socket = "{tmp_path}/ctd.sock"')
        (tmp_path / "ctd.toml").write_text(cfg)
        r = subprocess.run(
            [sys.executable, "-m", "ctd", "run", "--once", "--config", str(tmp_path / "ctd.toml")],
            capture_output=True,
            text=True,
            cwd=REPO,
            env=env(),
        )
        assert r.returncode == 0, r.stdout + r.stderr
        for name in ("osint", "edr", "partner"):
            assert f"{name}: ok" in r.stdout

    def test_once_fails_on_broken_source(self, daemon):
        """--once exits non-zero when a plugin fails, and still reports the others."""
        (daemon.dir / "partner.jsonl").unlink()
        r = subprocess.run(
            [sys.executable, "-m", "ctd", "run", "--once", "--config", str(daemon.config)],
            capture_output=True,
            text=True,
            cwd=daemon.dir,
            env=env(),
        )
        assert r.returncode == 1
        assert "partner: FAILED" in r.stdout and "osint: ok" in r.stdout

    def test_once_honours_a_rule_muted_with_ctdctl(self):
        """A rule muted with `ctdctl rules mute` (a stored mute) is not shared by `ctd run --once`."""
        rule = '\n[plugins.lists]\nadapter = "file"\npull = false\n[rules.all]\nfilter = "type = domain"\n'
        d = DaemonProc(short_tmpdir(), FEEDS + rule)
        try:
            (d.dir / "osint.txt").write_text("evil.example\n")
            (d.dir / "partner.jsonl").write_text('{"value": "bad.example"}\n')
            d.start()
            d.wait_ready()
            assert d.ctl("rules", "mute", "all", "--until", "2h").returncode == 0
            assert d.stop() == 0
            out = d.dir / "out.txt"
            d.write_config(
                FEEDS + rule + '[sharing.to-file]\nsources = ["osint", "partner"]\nrule = "all"\n'
                f'destination = "lists"\naction = "write"\nparams = {{ path = "{out}", format = "text" }}\n'
            )
            r = subprocess.run(
                [sys.executable, "-m", "ctd", "run", "--once", "--config", str(d.config)],
                capture_output=True,
                text=True,
                cwd=d.dir,
                env=env(),
            )
            assert r.returncode == 0, r.stdout + r.stderr
            assert "sharing to-file: muted" in r.stdout
            assert not out.exists()
        finally:
            d.cleanup()


class TestCrashRecovery:
    def test_sigkill_mid_pull_loses_nothing(self):
        """SIGKILL mid-pull loses no committed IoC; the restart re-pulls only what was not committed."""
        d = DaemonProc(short_tmpdir(), '[plugins.big]\nadapter = "file"\npath = "big.txt"\nbatch_size = 1000\n')
        try:
            n = 200_000
            with open(d.dir / "big.txt", "w") as f:
                for i in range(n):
                    f.write(f"host{i}.bulk.example\n")
            d.start()
            db = d.dir / "var" / "ctd.db"

            def partial():
                if not db.exists():
                    return None
                try:
                    c = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1)
                    row = c.execute("SELECT sub FROM source WHERE name = 'big'").fetchone()
                    c.close()
                except sqlite3.Error:
                    return None
                if row and row[0] and json.loads(row[0])["line"] > 5000:
                    return True
                return None

            wait_for(partial, timeout=60, what="a partly committed pull")
            d.proc.kill()
            d.proc.wait()
            c = sqlite3.connect(db)
            committed = c.execute("SELECT count(*) FROM indicator").fetchone()[0]
            sub = json.loads(c.execute("SELECT sub FROM source WHERE name = 'big'").fetchone()[0])
            c.close()
            assert 0 < committed < n
            assert sub["line"] == committed  # the checkpoint covers exactly what was committed
            r = subprocess.run(
                [sys.executable, "-m", "ctd", "run", "--once", "--config", str(d.config)],
                capture_output=True,
                text=True,
                cwd=d.dir,
                env=env(),
            )
            assert r.returncode == 0, r.stdout + r.stderr
            assert f"new={n - committed} updated=0" in r.stdout  # only the uncommitted rest was pulled
            c = sqlite3.connect(db)
            assert c.execute("SELECT count(*) FROM indicator WHERE active = 1").fetchone()[0] == n
            c.close()
        finally:
            d.cleanup()
