"""Config loading: validation with locations, durations, secrets, diffing."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from ctd.config import ConfigError, diff_named, load_config, parse_config, parse_duration

BASE = """
[daemon]
state_dir = "var"
[plugins.feed1]
adapter = "file"
path = "x.txt"
"""


def cfg(extra: str = "", base: str = BASE):
    return parse_config(textwrap.dedent(base) + textwrap.dedent(extra), "t.toml")


class TestValidation:
    def test_minimal_config(self):
        """A config with one file plugin validates and gets defaults."""
        c = cfg()
        p = c.plugins["feed1"]
        assert p.aging_days == 90 and p.pull and p.reconcile == "last_seen"
        assert p.options.path == "x.txt"

    def test_constraint_error_location(self):
        """An out-of-range value names its location."""
        with pytest.raises(ConfigError) as e:
            cfg("aging_days = 400\n")
        assert str(e.value).endswith("- at $.plugins.feed1.aging_days")

    def test_reputation_range(self):
        """The reputation override must be 1..10."""
        with pytest.raises(ConfigError, match=r"\$.plugins.feed1.reputation"):
            cfg("reputation = 0\n")

    def test_unknown_common_key(self):
        """Unknown keys are errors, with the table they are in."""
        with pytest.raises(ConfigError, match=r"unknown field `pathh`.*\$\.plugins\.feed1"):
            cfg("pathh = 'y'\n")

    def test_unknown_daemon_key(self):
        """An unknown key in [daemon] is an error at $.daemon."""
        with pytest.raises(ConfigError, match=r"unknown field `sockett` - at \$\.daemon"):
            cfg(base='[daemon]\nsockett = "x"\n')

    def test_adapter_key_validated_by_adapter(self):
        """Adapter-specific keys are validated by the adapter's own Struct."""
        with pytest.raises(ConfigError, match=r"\$\.plugins\.feed1\.format"):
            cfg("format = 'xml'\n")

    def test_unknown_adapter(self):
        """An adapter nobody registered is an error at .adapter."""
        with pytest.raises(ConfigError, match=r"unknown adapter 'nope'.*\$\.plugins\.x\.adapter"):
            cfg(base='[plugins.x]\nadapter = "nope"\n')

    def test_missing_adapter(self):
        """A plugin without an adapter key is an error."""
        with pytest.raises(ConfigError, match=r"adapter.*\$\.plugins\.x"):
            cfg(base='[plugins.x]\npath = "a"\n')

    def test_toml_syntax_error_says_line(self):
        """A TOML syntax error names the line."""
        with pytest.raises(ConfigError, match=r"line 3"):
            parse_config('[daemon]\nstate_dir = "x"\nbroken = \n')

    def test_bad_reconcile_policy(self):
        """The reconcile policy is one of three names."""
        with pytest.raises(ConfigError, match=r"\$\.plugins\.feed1\.reconcile"):
            cfg("reconcile = 'newest'\n")

    def test_bad_allowlist_cidr(self):
        """An invalid allowlist CIDR is rejected at load."""
        with pytest.raises(ConfigError, match=r"\$\.allowlist"):
            cfg('[allowlist]\ncidrs = ["10.0.0.0/33"]\n')

    def test_rule_filter_error_has_column(self):
        """A rule filter that does not parse is an error at $.rules.NAME.filter with its column."""
        with pytest.raises(ConfigError, match=r"column \d+ - at \$\.rules\.urls\.filter"):
            cfg('[rules.urls]\nfilter = "type = ulr"\n')

    def test_rule_exception_error_location(self):
        """A broken exception is located at $.rules.NAME.exceptions[i]."""
        with pytest.raises(ConfigError) as info:
            cfg('[rules.urls]\nfilter = "type = url"\nexceptions = [\'value = "a"\', "sevrity > low"]\n')
        assert info.value.location == "$.rules.urls.exceptions[1]"
        assert info.value.message == "unknown field 'sevrity' at column 1"

    def test_sharing_unknown_rule(self):
        """A sharing configuration naming an unknown rule is an error at .rule."""
        with pytest.raises(ConfigError, match=r"unknown rule 'nope' - at \$\.sharing\.s1\.rule"):
            cfg(SHARING.replace('rule = "urls"', 'rule = "nope"'))

    def test_sharing_unknown_source(self):
        """An unknown source plugin is an error at .sources[i]."""
        with pytest.raises(ConfigError, match=r"\$\.sharing\.s1\.sources\[0\]"):
            cfg(SHARING.replace('sources = ["feed1"]', 'sources = ["nope"]'))

    def test_sharing_params_validated_by_destination(self):
        """Action params are validated by the destination adapter."""
        with pytest.raises(ConfigError, match=r"\$\.sharing\.s1\.params\.format"):
            cfg(SHARING.replace('format = "text"', 'format = "xml"'))

    def test_sharing_unknown_action(self):
        """An action the destination adapter does not offer is an error at .action."""
        with pytest.raises(ConfigError, match=r"unknown action 'post'.*\$\.sharing\.s1\.action"):
            cfg(SHARING.replace('action = "write"', 'action = "post"'))

    def test_two_sharings_same_list_rejected(self):
        """Two sharing configurations writing the same list is a config error."""
        twice = SHARING + SHARING.replace("[sharing.s1]", "[sharing.s2]").split("[plugins.out]")[0].replace(
            '[rules.urls]\nfilter = "type = url"\n', ""
        )
        with pytest.raises(ConfigError, match=r"would overwrite each other"):
            cfg(twice)

    def test_sharing_parsed(self):
        """A valid sharing configuration keeps its typed params and interval."""
        c = cfg(SHARING)
        assert c.sharing["s1"].params.path == "out/urls.txt" and c.sharing["s1"].interval == 60


SHARING = """
[rules.urls]
filter = "type = url"
[sharing.s1]
sources = ["feed1"]
rule = "urls"
destination = "out"
action = "write"
params = { path = "out/urls.txt", format = "text" }
[plugins.out]
adapter = "file"
pull = false
"""


class TestDurations:
    @pytest.mark.parametrize("text,seconds", [("90s", 90), ("15m", 900), ("6h", 21600), ("14d", 1209600), (30, 30)])
    def test_units(self, text, seconds):
        """Durations accept s/m/h/d suffixes and bare seconds."""
        assert parse_duration(text) == seconds

    def test_bad_duration_location(self):
        """A malformed duration is an error at its key."""
        with pytest.raises(ConfigError, match=r"invalid duration.*\$\.plugins\.feed1\.sync_interval"):
            cfg("sync_interval = '5 minutes'\n")


class TestSecrets:
    def test_secret_file_replaces_inline(self, tmp_path, monkeypatch):
        """`<key>_file` reads the secret from a file into `<key>`."""
        import msgspec

        from ctd.model import Adapter

        class Secretive(Adapter):
            can_pull = True

            class Config(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
                token: str

        import ctd.config as config_mod

        monkeypatch.setattr(config_mod, "adapter_class", lambda name: Secretive)
        secret = tmp_path / "tok"
        secret.write_text("s3cr3t-value\n")
        c = cfg(base=f'[plugins.x]\nadapter = "x"\ntoken_file = "{secret}"\n')
        assert c.plugins["x"].options.token == "s3cr3t-value"

    def test_unreadable_secret_file_no_content_leak(self, monkeypatch, tmp_path):
        """An unreadable secret file is a config error at its key."""
        import msgspec

        from ctd.model import Adapter

        class Secretive(Adapter):
            can_pull = True

            class Config(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
                token: str

        import ctd.config as config_mod

        monkeypatch.setattr(config_mod, "adapter_class", lambda name: Secretive)
        with pytest.raises(ConfigError, match=r"cannot read token_file.*\$\.plugins\.x\.token_file"):
            cfg(base=f'[plugins.x]\nadapter = "x"\ntoken_file = "{tmp_path}/missing"\n')


class TestDiff:
    def test_diff_by_name(self):
        """Diffing reports added, removed, changed and unchanged names."""
        a = cfg('[plugins.feed2]\nadapter = "file"\npath = "b"\n').plugins
        b = cfg('aging_days = 5\n[plugins.feed3]\nadapter = "file"\npath = "c"\n').plugins
        d = diff_named(a, b)
        assert (d.added, d.removed, d.changed, d.unchanged) == (["feed3"], ["feed2"], ["feed1"], [])


class TestCheckConfigCommand:
    def test_demo_config_valid(self):
        """`ctd check-config etc/ctd.toml` exits 0 with a one-line summary."""
        r = subprocess.run(
            [sys.executable, "-m", "ctd", "check-config", "etc/ctd.toml"], capture_output=True, text=True
        )
        assert r.returncode == 0, r.stderr
        assert r.stdout.count("\n") == 1 and "OK" in r.stdout

    def test_invalid_config_exit_2(self, tmp_path):
        """An invalid config exits 2 and prints the error with its location."""
        p = tmp_path / "bad.toml"
        p.write_text(textwrap.dedent(BASE) + "aging_days = -1\n")
        r = subprocess.run([sys.executable, "-m", "ctd", "check-config", str(p)], capture_output=True, text=True)
        assert r.returncode == 2
        assert "$.plugins.feed1.aging_days" in r.stderr

    def test_load_config_missing_file(self, tmp_path):
        """A missing config file is a ConfigError, not a traceback."""
        with pytest.raises(ConfigError, match="cannot read config"):
            load_config(tmp_path / "nope.toml")


def test_demo_config_commented_examples_are_valid(tmp_path, monkeypatch):
    """The commented adapter examples in etc/ctd.toml validate once uncommented."""
    import re
    from pathlib import Path

    text = (Path(__file__).parent.parent / "etc" / "ctd.toml").read_text()
    head, tail = text.split("# More sources", 1)
    lines = [ln[2:] for ln in tail.splitlines() if ln.startswith("# [") or re.match(r"# [a-z_]+ = ", ln)]
    for name in (
        "taxii-password",
        "netskope-v2",
        "netskope-v1",
        "misp-api-key",
        "falcon-secret",
        "defender-secret",
        "mimecast-secret",
        "s1-token",
    ):
        (tmp_path / name).write_text("not-a-real-secret")
    (tmp_path / "edl.password").write_text("pw")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path))
    body = "\n".join(lines).replace("/etc/ctd/edl.password", str(tmp_path / "edl.password"))
    cfg = parse_config(head + "\n" + body + "\n")
    assert {"urlhaus", "intel", "fw", "netskope", "misp", "falcon", "defender", "mimecast", "sentinelone"} <= set(
        cfg.plugins
    )
    assert {"news", "advisory"} <= set(cfg.plugins)
    assert {"urls-to-firewall", "urls-to-netskope", "hashes-to-misp", "hashes-to-falcon"} <= set(cfg.sharing)
    assert {"urls-to-defender", "urls-to-mimecast", "hashes-to-sentinelone"} <= set(cfg.sharing)
    assert {"news-to-proxy"} <= set(cfg.sharing)
    news = cfg.plugins["news"]
    assert (news.adapter, news.warninglists, news.warninglist_action) == ("rss", "default", "inactive")


def test_secret_options_never_in_repr(tmp_path):
    """A secret adapter option shows as *** in the plugin config's repr, yet works as the real string."""
    from ctd.model import Secret

    secret = tmp_path / "key"
    secret.write_text("s3cr3t-api-key\n")
    c = parse_config(f'[plugins.m]\nadapter = "misp"\nurl = "https://misp.example"\napi_key_file = "{secret}"\n')
    opts = c.plugins["m"].options
    assert isinstance(opts.api_key, Secret) and opts.api_key == "s3cr3t-api-key"
    assert "s3cr3t" not in repr(c) and "'***'" in repr(opts)
