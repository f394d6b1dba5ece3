"""The systemd unit, its sysusers/tmpfiles snippets, the system config, `make install`.

`systemd-analyze verify` returns 0 on warnings (unknown keys, bad values), so
the tests also require an empty stderr. ExecStart= must name an existing
executable, so the unit is templated onto this venv's `ctd`/`ctdctl` first.
Nothing here touches the real /etc, /opt or /var: `make install` runs with a
temporary DESTDIR, sysusers/tmpfiles with `--root=`.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
UNIT = REPO / "systemd" / "ctd.service"
SYSUSERS = REPO / "systemd" / "ctd.sysusers"
TMPFILES = REPO / "systemd" / "ctd.tmpfiles"
SYSTEM_CONFIG = REPO / "etc" / "ctd-system.toml"
VENV_BIN = Path(sys.executable).parent
ANALYZE = shutil.which("systemd-analyze")

needs_analyze = pytest.mark.skipif(ANALYZE is None, reason="systemd-analyze is not installed")


def _run(*cmd: str | os.PathLike[str], **kw) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=300, **kw)


def _template(unit_text: str, bin_dir: Path | str, dest: Path) -> Path:
    """The unit with /opt/ctd/bin/ replaced by ``bin_dir`` (which must hold ctd and ctdctl)."""
    dest.mkdir(parents=True, exist_ok=True)
    path = dest / "ctd.service"
    path.write_text(unit_text.replace("/opt/ctd/bin/", f"{bin_dir}/"))
    return path


def _settings(unit_text: str) -> list[tuple[str, str]]:
    """(key, value) of every uncommented assignment, in order."""
    out = []
    for line in unit_text.splitlines():
        line = line.strip()
        if line and not line.startswith(("#", ";", "[")) and "=" in line:
            key, _, value = line.partition("=")
            out.append((key.strip(), value.strip()))
    return out


def _exposure(stdout: str) -> float:
    m = re.search(r"Overall exposure level for ctd\.service: (\d+(?:\.\d+)?)", stdout)
    assert m, f"no overall exposure line in:\n{stdout[-2000:]}"
    return float(m.group(1))


# --- the unit file ------------------------------------------------------------


@needs_analyze
def test_unit_verifies_without_warnings(tmp_path):
    """`systemd-analyze verify` accepts the unit with rc 0 and nothing on stderr."""
    unit = _template(UNIT.read_text(), VENV_BIN, tmp_path)
    res = _run(ANALYZE, "verify", "--man=no", unit)
    assert (res.returncode, res.stderr) == (0, "")


@needs_analyze
def test_verify_catches_an_unknown_key(tmp_path):
    """The verify check would notice a typo: an unknown key appears on stderr (rc stays 0)."""
    text = UNIT.read_text().replace("[Service]\n", "[Service]\nWatchdogSecs=30s\n")
    res = _run(ANALYZE, "verify", "--man=no", _template(text, VENV_BIN, tmp_path))
    assert "WatchdogSecs" in res.stderr


@needs_analyze
def test_unit_security_exposure_is_ok(tmp_path):
    """`systemd-analyze security --offline=true` rates the unit 2.0 or lower ("OK")."""
    unit = _template(UNIT.read_text(), VENV_BIN, tmp_path)
    res = _run(ANALYZE, "security", "--offline=true", "--no-pager", unit)
    assert res.returncode == 0, res.stderr
    assert _exposure(res.stdout + res.stderr) <= 2.0


REQUIRED = [
    ("Type", "notify"),
    ("ExecStart", "/opt/ctd/bin/ctd run --config /etc/ctd/ctd.toml"),
    ("ExecReload", "/opt/ctd/bin/ctdctl --config /etc/ctd/ctd.toml reload"),
    ("WatchdogSec", "30s"),
    ("Restart", "on-failure"),
    ("RestartSec", "5s"),
    ("User", "ctd"),
    ("Group", "ctd"),
    ("UMask", "0027"),
    ("StateDirectory", "ctd"),
    ("RuntimeDirectory", "ctd"),
    ("RuntimeDirectoryMode", "0750"),
    ("ConfigurationDirectory", "ctd"),
    ("ProtectSystem", "strict"),
    ("ProtectHome", "yes"),
    ("PrivateTmp", "yes"),
    ("PrivateDevices", "yes"),
    ("NoNewPrivileges", "yes"),
    ("CapabilityBoundingSet", ""),
    ("AmbientCapabilities", ""),
    ("RestrictAddressFamilies", "AF_UNIX AF_INET AF_INET6"),
    ("SystemCallFilter", "@system-service"),
    ("SystemCallFilter", "~@privileged @resources"),
    ("SystemCallArchitectures", "native"),
    ("MemoryDenyWriteExecute", "yes"),
    ("WantedBy", "multi-user.target"),
]


@pytest.mark.parametrize(("key", "value"), REQUIRED, ids=[f"{k}={v}" for k, v in REQUIRED])
def test_unit_has_setting(key, value):
    """The unit sets each required key to the expected value."""
    assert (key, value) in _settings(UNIT.read_text())


def test_unit_shows_a_load_credential_example():
    """The unit documents secrets with a (commented) LoadCredential= line."""
    assert re.search(r"(?m)^#? ?LoadCredential=[\w-]+:/etc/ctd/secrets/", UNIT.read_text())


def test_unit_does_not_block_network():
    """ctd must reach vendor APIs: no PrivateNetwork= or IPAddressDeny= in effect."""
    keys = {k for k, _ in _settings(UNIT.read_text())}
    assert not keys & {"PrivateNetwork", "IPAddressDeny", "IPAddressAllow"}


# --- sysusers.d / tmpfiles.d ----------------------------------------------------


@pytest.mark.skipif(shutil.which("systemd-sysusers") is None, reason="systemd-sysusers is not installed")
def test_sysusers_creates_ctd_user_and_group(tmp_path):
    """systemd-sysusers creates user and group ctd with home /var/lib/ctd."""
    (tmp_path / "etc").mkdir()
    res = _run("systemd-sysusers", f"--root={tmp_path}", SYSUSERS)
    assert res.returncode == 0, res.stderr
    user = (tmp_path / "etc/passwd").read_text().split(":")
    group = (tmp_path / "etc/group").read_text().split(":")
    assert (user[0], user[5], group[0], group[2]) == ("ctd", "/var/lib/ctd", "ctd", user[3])


@pytest.mark.skipif(shutil.which("systemd-tmpfiles") is None, reason="systemd-tmpfiles is not installed")
@pytest.mark.skipif(os.geteuid() != 0, reason="systemd-tmpfiles --root needs root to chown to ctd")
def test_tmpfiles_prepares_directories_and_config_mode(tmp_path):
    """systemd-tmpfiles makes feeds/ and secrets/ and gives ctd.toml mode 0640."""
    (tmp_path / "etc/ctd").mkdir(parents=True)
    (tmp_path / "etc/ctd/ctd.toml").write_text("")
    assert _run("systemd-sysusers", f"--root={tmp_path}", SYSUSERS).returncode == 0
    res = _run("systemd-tmpfiles", f"--root={tmp_path}", "--create", TMPFILES)
    assert (res.returncode, res.stderr) == (0, "")
    modes = {
        p: (tmp_path / p).stat().st_mode & 0o7777
        for p in ("var/lib/ctd", "var/lib/ctd/feeds", "etc/ctd/secrets", "etc/ctd/ctd.toml")
    }
    assert modes == {
        "var/lib/ctd": 0o750,
        "var/lib/ctd/feeds": 0o2770,
        "etc/ctd/secrets": 0o700,
        "etc/ctd/ctd.toml": 0o640,
    }


# --- the system config ---------------------------------------------------------


def _check_config(path: Path) -> subprocess.CompletedProcess[str]:
    return _run(sys.executable, "-m", "ctd", "check-config", path)


def test_system_config_passes_check_config():
    """etc/ctd-system.toml is a valid config as shipped."""
    res = _check_config(SYSTEM_CONFIG)
    assert res.returncode == 0, res.stderr


def test_system_config_commented_examples_are_valid(tmp_path):
    """Uncommenting the example plugin/rule/sharing tables still gives a valid config."""
    text = re.sub(r"(?m)^# (\[[a-z.\-]+\]|[a-z_]+ = .*)$", r"\1", SYSTEM_CONFIG.read_text())
    # Group names must exist on the host that checks the file; that is not this one.
    text = re.sub(r"(?m)^(socket_group|admin_group) = .*$", "", text)
    assert "[plugins.osint]" in text.splitlines()
    path = tmp_path / "ctd.toml"
    path.write_text(text)
    res = _check_config(path)
    assert res.returncode == 0, res.stderr
    assert "2 plugins, 1 pulling, 1 rules, 1 sharing" in res.stdout


def test_system_config_uses_the_unit_directories():
    """The system config keeps state in /var/lib/ctd and the socket in /run/ctd, no demo paths."""
    text = SYSTEM_CONFIG.read_text()
    assert 'state_dir = "/var/lib/ctd"' in text
    assert 'socket = "/run/ctd/ctd.sock"' in text
    assert "samples" not in text and '"var/' not in text


# --- make install ----------------------------------------------------------------


def _make(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL")}
    return _run("make", "--no-print-directory", "-C", REPO, *args, f"PYTHON={sys.executable}", env=env)


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """One `make install DESTDIR=... PREFIX=/opt/ctd` (builds a venv: ~10-20 s)."""
    destdir = tmp_path_factory.mktemp("destdir")
    res = _make("install", f"DESTDIR={destdir}", "PREFIX=/opt/ctd")
    assert res.returncode == 0, res.stdout + res.stderr
    return destdir, res


def test_install_places_unit_snippets_and_config(installed):
    """make install puts the unit, sysusers/tmpfiles snippets and the config under DESTDIR."""
    destdir, _ = installed
    assert (destdir / "etc/systemd/system/ctd.service").read_text() == UNIT.read_text()
    assert (destdir / "usr/lib/sysusers.d/ctd.conf").read_text() == SYSUSERS.read_text()
    assert (destdir / "usr/lib/tmpfiles.d/ctd.conf").read_text() == TMPFILES.read_text()
    config = destdir / "etc/ctd/ctd.toml"
    assert config.read_text() == SYSTEM_CONFIG.read_text()
    assert config.stat().st_mode & 0o777 == 0o640


def test_install_prints_next_steps(installed):
    """make install ends with the commands to run next."""
    out = installed[1].stdout
    for step in (
        "systemd-sysusers",
        "systemctl daemon-reload",
        "systemctl enable --now ctd",
        "journalctl -u ctd -f",
        "/opt/ctd/bin/ctdctl --config /etc/ctd/ctd.toml status",
    ):
        assert step in out


def test_installed_venv_runs_ctd(installed):
    """The staged venv's interpreter runs the installed (non-editable) ctd."""
    destdir, _ = installed
    res = _run(destdir / "opt/ctd/bin/python", "-m", "ctd", "--version", cwd="/")
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "ctd 0.1.0"
    where = _run(destdir / "opt/ctd/bin/python", "-c", "import ctd; print(ctd.__file__)", cwd="/")
    assert where.stdout.startswith(f"{destdir}/opt/ctd/lib/")


def test_staged_scripts_point_at_prefix(installed):
    """With DESTDIR set, bin/ scripts run from PREFIX: no staging path is left in bin/."""
    destdir, _ = installed
    bindir = destdir / "opt/ctd/bin"
    assert (bindir / "ctd").read_text().splitlines()[0] == "#!/opt/ctd/bin/python"
    assert (bindir / "ctdctl").read_text().splitlines()[0] == "#!/opt/ctd/bin/python"
    leftovers = [
        p.name
        for p in bindir.iterdir()
        if p.is_file() and not p.is_symlink() and str(destdir) in p.read_text(errors="replace")
    ]
    assert leftovers == []


@needs_analyze
def test_installed_unit_verifies_against_the_staged_venv(installed):
    """The installed unit, pointed at the staged venv, passes verify with an empty stderr."""
    destdir, _ = installed
    text = (destdir / "etc/systemd/system/ctd.service").read_text()
    unit = _template(text, destdir / "opt/ctd/bin", destdir / "verify")
    res = _run(ANALYZE, "verify", "--man=no", unit)
    assert (res.returncode, res.stderr) == (0, "")


def test_second_install_keeps_the_admins_config(installed):
    """A second make install never overwrites an existing ctd.toml."""
    destdir, _ = installed
    config = destdir / "etc/ctd/ctd.toml"
    config.write_text("# edited by the admin\n")
    res = _make("install", f"DESTDIR={destdir}", "PREFIX=/opt/ctd")
    assert res.returncode == 0, res.stdout + res.stderr
    assert config.read_text() == "# edited by the admin\n"
    assert "kept the existing" in res.stdout


def test_install_rewrites_paths_for_another_prefix(tmp_path):
    """PREFIX and SYSCONFDIR are rewritten into the unit's ExecStart=/ExecReload= and tmpfiles."""
    res = _make("install-data", f"DESTDIR={tmp_path}", "PREFIX=/srv/ctd", "SYSCONFDIR=/usr/local/etc")
    assert res.returncode == 0, res.stdout + res.stderr
    settings = dict(_settings((tmp_path / "etc/systemd/system/ctd.service").read_text()))
    assert settings["ExecStart"] == "/srv/ctd/bin/ctd run --config /usr/local/etc/ctd/ctd.toml"
    assert settings["ExecReload"] == "/srv/ctd/bin/ctdctl --config /usr/local/etc/ctd/ctd.toml reload"
    assert "z /usr/local/etc/ctd/ctd.toml" in (tmp_path / "usr/lib/tmpfiles.d/ctd.conf").read_text()
    assert (tmp_path / "usr/local/etc/ctd/ctd.toml").exists()
