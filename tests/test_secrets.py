"""Secrets from files and systemd credentials never appear in logs, ctdctl output or errors."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.daemonproc import DaemonProc, env, short_tmpdir

SECRET = "s3cr3t-T0KEN-do-not-print"
OTHER = "0th3r-credential-v4lue"


@pytest.fixture
def daemon():
    d = DaemonProc(short_tmpdir(), "")
    creds = d.dir / "creds"
    creds.mkdir()
    (creds / "api").write_text(OTHER + "\n")
    (d.dir / "token").write_text(SECRET + "\n")
    d._env["CREDENTIALS_DIRECTORY"] = str(creds)
    d.write_config(
        '[plugins.vendor]\nadapter = "tests.fake_adapters:SecretAdapter"\nurl = "https://api.vendor.example"\n'
        f'token_file = "{d.dir}/token"\n'
        '[plugins.other]\nadapter = "tests.fake_adapters:SecretAdapter"\nurl = "https://b.example"\n'
        'token = { credential = "api" }\n'
    )
    yield d
    d.cleanup()


def test_secrets_never_printed(daemon):
    """With secrets from a file and a credential, no log line, ctdctl output or error shows them."""
    daemon.start().wait_ready()
    outputs = []
    for args in (
        ["status"],
        ["sources"],
        ["plugins", "list"],
        ["plugins", "check", "vendor"],
        ["plugins", "check", "other"],
        ["stats"],
        ["checkpoint", "show", "vendor"],
    ):
        for fmt in ([], ["--json"]):
            r = daemon.ctl(*fmt, *args)
            outputs += [r.stdout, r.stderr]
    assert "reached https://api.vendor.example" in "".join(outputs)  # the secrets were in use
    # a rejected reload mentions the broken key, not the secret values
    daemon.write_config(daemon.config.read_text().replace('url = "https://b.example"', "url = 5"))
    r = daemon.ctl("reload")
    assert r.returncode == 2
    outputs += [r.stdout, r.stderr]
    r = subprocess.run(
        [sys.executable, "-m", "ctd", "check-config", str(daemon.config)],
        capture_output=True,
        text=True,
        env=daemon._env,
    )
    outputs += [r.stdout, r.stderr]
    daemon.stop()
    outputs.append(daemon.log.read_text())
    everything = "\n".join(outputs)
    assert "401 Unauthorized" in everything  # the failing pull was logged...
    assert SECRET not in everything and OTHER not in everything  # ...without the secrets


def test_missing_credentials_directory_is_config_error(tmp_path):
    """A credential reference without $CREDENTIALS_DIRECTORY is a config error at its key."""
    cfg = tmp_path / "c.toml"
    cfg.write_text(
        '[plugins.v]\nadapter = "tests.fake_adapters:SecretAdapter"\nurl = "u"\ntoken = { credential = "api" }\n'
    )
    r = subprocess.run(
        [sys.executable, "-m", "ctd", "check-config", str(cfg)], capture_output=True, text=True, env=env()
    )
    assert r.returncode == 2 and "$.plugins.v.token" in r.stderr and "CREDENTIALS_DIRECTORY" in r.stderr
