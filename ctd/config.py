"""Load and validate ``ctd.toml`` into immutable config snapshots.

Every error names its location (``- at $.plugins.feed1.aging_days`` or the
TOML line), so ``ctd check-config`` and a rejected reload tell the operator
exactly what to fix. Adapter keys live in the same ``[plugins.NAME]`` table
as the common keys and are validated by the adapter's own ``Config`` Struct.
"""

from __future__ import annotations

import hashlib
import os
import tomllib
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

import msgspec
from msgspec import Meta

from ctd.config_warnings import unverified_plugins
from ctd.errors import ConfigError, RuleError
from ctd.guard import resolve as resolve_guard

# Config value types live in ctd.model (adapters use them); re-exported here for the core.
from ctd.model import Duration as Duration
from ctd.model import Secret
from ctd.model import parse_duration as parse_duration
from ctd.plugins import adapter_class
from ctd.service.metrics_server import parse_address

T = TypeVar("T")


def _dec_hook(tp: type, obj: Any) -> Any:
    if tp is Duration:
        return parse_duration(obj)
    if tp is Secret:
        if not isinstance(obj, str):
            raise TypeError(f"Expected `str`, got `{type(obj).__name__}`")
        return Secret(obj)
    raise TypeError(f"unsupported type {tp!r}")  # msgspec reports it with the key's location


class _Section(msgspec.Struct, kw_only=True, forbid_unknown_fields=True, frozen=True):
    """A config table. Subclasses inherit these options; they repeat ``frozen`` for mypy, which does not see it."""


class DaemonConfig(_Section, frozen=True):
    state_dir: str = "/var/lib/ctd"
    socket: str = "/run/ctd/ctd.sock"
    socket_group: str | None = None
    admin_group: str | None = None
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    housekeeping_interval: Duration = Duration(300)
    shutdown_timeout: Duration = Duration(10)
    metrics: str | None = None  # "HOST:PORT" of the Prometheus endpoint (GET /metrics); None: off

    def __post_init__(self) -> None:
        # msgspec turns a ValueError here into a ValidationError at $.daemon.
        if self.metrics is not None:
            parse_address(self.metrics)


class AllowlistConfig(_Section, frozen=True):
    values: list[str] = []
    cidrs: list[str] = []
    domains: list[str] = []


class PluginConfig(_Section, frozen=True):
    """The keys every plugin has; ``options`` holds the adapter's own Struct."""

    adapter: str
    pull: bool = True
    sync_interval: Duration = Duration(3600)
    initial_range: Duration = Duration(7 * 86400)
    aging_days: Annotated[int, Meta(ge=0, le=365)] = 90
    reputation: Annotated[int, Meta(ge=1, le=10)] | None = None
    reconcile: Literal["last_seen", "first_seen", "highest_severity"] = "last_seen"
    tags: list[str] = []
    timeout: Duration = Duration(600)
    # The false-positive guard (ctd.guard): unset, the adapter's default_warninglists.
    warninglists: Literal["default", "all", "off"] | list[str] | None = None
    warninglist_action: Literal["inactive", "tag"] = "inactive"
    options: Any = None


COMMON_PLUGIN_KEYS = frozenset(PluginConfig.__struct_fields__) - {"options"}


class RuleConfig(_Section, frozen=True):
    """A business rule: a filter, exceptions that exclude what they match, an optional mute."""

    filter: str
    exceptions: list[str] = []
    muted_until: datetime | None = None
    description: str = ""


class SharingConfig(_Section, frozen=True):
    """One-way sharing: IoCs from ``sources`` matching ``rule`` go to ``destination``."""

    sources: list[str]
    rule: str
    destination: str
    action: str
    params: Any = {}
    interval: Duration = Duration(60)


class Config(_Section, frozen=True):
    daemon: DaemonConfig = DaemonConfig()
    allowlist: AllowlistConfig = AllowlistConfig()
    plugins: dict[str, PluginConfig] = {}
    rules: dict[str, RuleConfig] = {}
    sharing: dict[str, SharingConfig] = {}
    # Connection settings shared by several plugins (e.g. a Netskope tenant);
    # validated by the adapters that use them (their ``bind`` hook). String
    # values are Secret (see ``_tenant_table``) so no repr of the config shows a token.
    tenants: dict[str, dict[str, Any]] = {}
    path: str = ""
    hash: str = ""


def _convert(obj: Any, tp: Any, where: str) -> Any:
    try:
        return msgspec.convert(obj, tp, dec_hook=_dec_hook)
    except msgspec.ValidationError as exc:
        msg, sep, loc = str(exc).rpartition(" - at `")
        if not sep:
            raise ConfigError(str(exc), where) from None
        loc = loc.rstrip("`")
        raise ConfigError(msg, where + loc[1:]) from None


def _read_secret(path: str, where: str, what: str) -> str:
    try:
        return Path(path).read_text().strip()
    except OSError as exc:
        raise ConfigError(f"cannot read {what}: {exc.strerror}", where) from None


def _resolve_secrets(raw: dict[str, Any], fields: tuple[str, ...], where: str) -> dict[str, Any]:
    """Secrets never sit in the config file itself if you do not want them to.

    ``token_file = "/path"`` stands for ``token = <file contents>``, and
    ``token = { credential = "NAME" }`` reads ``$CREDENTIALS_DIRECTORY/NAME``
    (systemd's ``LoadCredential=``). Works for any adapter field.
    """
    out = dict(raw)
    for key, value in raw.items():
        if isinstance(value, dict) and set(value) == {"credential"} and key in fields:
            name = value["credential"]
            if not isinstance(name, str) or not name or "/" in name:
                raise ConfigError("credential must be a plain name", f"{where}.{key}.credential")
            base = os.environ.get("CREDENTIALS_DIRECTORY")
            if not base:
                raise ConfigError(
                    f"$CREDENTIALS_DIRECTORY is not set (run under systemd with LoadCredential=, or use {key}_file)",
                    f"{where}.{key}",
                )
            out[key] = _read_secret(os.path.join(base, name), f"{where}.{key}", f"credential {name!r}")
            continue
        base_key = key[: -len("_file")] if key.endswith("_file") else None
        if base_key is None or base_key not in fields or key in fields:
            continue
        if base_key in raw:
            raise ConfigError(f"give either {base_key} or {key}, not both", f"{where}.{key}")
        if not isinstance(value, str):
            raise ConfigError("expected a path", f"{where}.{key}")
        out[base_key] = _read_secret(value, f"{where}.{key}", key)
        del out[key]
    return out


def _plugin(name: str, raw: Any) -> PluginConfig:
    where = f"$.plugins.{name}"
    if not isinstance(raw, dict):
        raise ConfigError("expected a table", where)
    common = {k: v for k, v in raw.items() if k in COMMON_PLUGIN_KEYS}
    if "adapter" not in common:
        raise ConfigError("Object missing required field `adapter`", where)
    plugin = _convert(common, PluginConfig, where)
    try:
        cls = adapter_class(plugin.adapter)
    except ConfigError as exc:
        raise ConfigError(exc.message, f"{where}.adapter") from None
    own = {k: v for k, v in raw.items() if k not in COMMON_PLUGIN_KEYS}
    own = _resolve_secrets(own, _field_names(cls.Config), where)
    options = _convert(own, cls.Config, where)
    if plugin.pull and not cls.can_pull:
        raise ConfigError(f"adapter {plugin.adapter!r} cannot pull; set pull = false", f"{where}.pull")
    try:
        cls.check_plugin(plugin.pull, options)
    except ValueError as exc:
        raise ConfigError(str(exc), where) from None
    guard = resolve_guard(plugin.warninglists, cls.default_warninglists, where) if plugin.pull else "off"
    return msgspec.structs.replace(plugin, options=options, warninglists=guard)


def _field_names(tp: Any) -> tuple[str, ...]:
    return tuple(f.name for f in msgspec.structs.fields(tp))


class _Binding:
    """What an adapter's ``bind`` hook may read of the config (``ctd.model.BindContext``)."""

    def __init__(self, cfg: Config, plugin: str) -> None:
        self._cfg = cfg
        self._plugin = plugin

    @property
    def plugin(self) -> str:
        return self._plugin

    @property
    def state_dir(self) -> str:
        return self._cfg.daemon.state_dir

    def tenant(self, name: str, tp: type[T]) -> T:
        raw = self._cfg.tenants.get(name)
        if raw is None:
            raise ValueError(f"unknown tenant {name!r}: add a [tenants.{name}] table")
        return convert_section(raw, tp, f"$.tenants.{name}")


def _bind(name: str, plugin: PluginConfig, cfg: Config) -> PluginConfig:
    """Let an adapter complete its options from the rest of the config (tenants, state_dir)."""
    try:
        options = adapter_class(plugin.adapter).bind(plugin.options, _Binding(cfg, name))
    except ValueError as exc:
        raise ConfigError(str(exc), f"$.plugins.{name}") from None
    return msgspec.structs.replace(plugin, options=options)


def convert_section(raw: Any, tp: Any, where: str) -> Any:
    """Validate a raw table against the Struct ``tp`` (secrets resolved)."""
    if not isinstance(raw, dict):
        raise ConfigError("expected a table", where)
    return _convert(_resolve_secrets(raw, _field_names(tp), where), tp, where)


def _check_rule(name: str, rule: RuleConfig) -> None:
    from ctd.rules.compiler import Rule

    try:
        Rule(rule.filter, rule.exceptions)
    except RuleError as exc:
        part = "filter" if exc.exception is None else f"exceptions[{exc.exception}]"
        raise ConfigError(f"{exc.message} at column {exc.column}", f"$.rules.{name}.{part}") from None


def _sharing(name: str, sh: SharingConfig, cfg: Config) -> SharingConfig:
    where = f"$.sharing.{name}"
    for i, src in enumerate(sh.sources):
        if src not in cfg.plugins:
            raise ConfigError(f"unknown plugin {src!r}", f"{where}.sources[{i}]")
    if not sh.sources:
        raise ConfigError("at least one source is needed", f"{where}.sources")
    if sh.rule not in cfg.rules:
        raise ConfigError(f"unknown rule {sh.rule!r}", f"{where}.rule")
    dest = cfg.plugins.get(sh.destination)
    if dest is None:
        raise ConfigError(f"unknown plugin {sh.destination!r}", f"{where}.destination")
    actions = adapter_class(dest.adapter).ACTIONS
    if not actions:
        raise ConfigError(f"adapter {dest.adapter!r} cannot be a destination", f"{where}.destination")
    spec = actions.get(sh.action)
    if spec is None:
        known = ", ".join(sorted(actions))
        raise ConfigError(
            f"unknown action {sh.action!r} for adapter {dest.adapter!r} (known: {known})", f"{where}.action"
        )
    params = _convert(sh.params, spec.params, f"{where}.params")
    return msgspec.structs.replace(sh, params=params)


def _check_targets(cfg: Config) -> None:
    """Two sharing configurations writing the same list would overwrite each other."""
    seen: dict[tuple[str, str], str] = {}
    for name, sh in sorted(cfg.sharing.items()):
        target = adapter_class(cfg.plugins[sh.destination].adapter).target(sh.action, sh.params)
        if target is None:
            continue
        key = (sh.destination, target)
        if key in seen:
            raise ConfigError(
                f"sharing configurations {seen[key]!r} and {name!r} both write {target!r} on "
                f"{sh.destination!r}; they would overwrite each other (use one list per sharing)",
                f"$.sharing.{name}",
            )
        seen[key] = name


def _table(obj: Any, where: str) -> dict[str, Any]:
    if not isinstance(obj, dict):
        raise ConfigError("expected a table", where)
    return obj


# Tenant keys known to hold no secret; every other string value is kept as a Secret.
_PLAIN_TENANT_KEYS = frozenset({"url", "ca_file"})


def _tenant_table(raw: Any, where: str) -> dict[str, Any]:
    """A ``[tenants.NAME]`` table with its string values as Secret, except known plain ones.

    Which keys are secret is known only to the adapter that binds the table, and
    a table may be bound by none: so mask by default. A Secret is still a str.
    """
    table = _table(raw, where)
    return {
        k: Secret(v) if isinstance(v, str) and k not in _PLAIN_TENANT_KEYS and not k.endswith("_file") else v
        for k, v in table.items()
    }


def parse_config(text: str, path: str = "<string>") -> Config:
    """Validate a whole config document; raises ConfigError with its location."""
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"TOML syntax error: {exc}") from None
    # Named tables are decoded one by one so errors name them ($.plugins.feed1...).
    named = {key: _table(raw.pop(key, {}), f"$.{key}") for key in ("plugins", "rules", "sharing", "tenants")}
    named["tenants"] = {name: _tenant_table(body, f"$.tenants.{name}") for name, body in named["tenants"].items()}
    cfg = _convert(raw, Config, "$")
    plugins = {name: _plugin(name, body) for name, body in named["plugins"].items()}
    rules = {name: _convert(body, RuleConfig, f"$.rules.{name}") for name, body in named["rules"].items()}
    cfg = msgspec.structs.replace(cfg, plugins=plugins, rules=rules, tenants=named["tenants"])
    cfg = msgspec.structs.replace(cfg, plugins={n: _bind(n, p, cfg) for n, p in plugins.items()})
    _check_allowlist(cfg.allowlist)
    from ctd.control.access import resolve_gid

    resolve_gid(cfg.daemon.socket_group, "$.daemon.socket_group")
    resolve_gid(cfg.daemon.admin_group, "$.daemon.admin_group")
    for name, rule in cfg.rules.items():
        _check_rule(name, rule)
    sharing = {
        name: _sharing(name, _convert(body, SharingConfig, f"$.sharing.{name}"), cfg)
        for name, body in named["sharing"].items()
    }
    cfg = msgspec.structs.replace(cfg, sharing=sharing)
    _check_targets(cfg)
    digest = hashlib.sha256(text.encode()).hexdigest()[:12]
    return msgspec.structs.replace(cfg, path=path, hash=digest)


def _check_allowlist(al: AllowlistConfig) -> None:
    from ctd.allowlist import Allowlist

    try:
        Allowlist(al.values, al.cidrs, al.domains)
    except ValueError as exc:
        raise ConfigError(str(exc), "$.allowlist") from None


def load_config(path: str | os.PathLike[str]) -> Config:
    """Read and validate the file at ``path``."""
    p = Path(path)
    try:
        text = p.read_bytes().decode()  # no newline translation: the hash is the file's
    except OSError as exc:
        raise ConfigError(f"cannot read config {p}: {exc.strerror}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"config {p} is not UTF-8 (byte {exc.start})") from None
    return parse_config(text, str(p))


def default_config_path() -> str:
    return os.environ.get("CTD_CONFIG") or "/etc/ctd/ctd.toml"


class ConfigDiff(msgspec.Struct, frozen=True, kw_only=True):
    added: list[str]
    removed: list[str]
    changed: list[str]
    unchanged: list[str]


def diff_named(old: dict[str, Any], new: dict[str, Any]) -> ConfigDiff:
    """Compare two name -> config maps (plugins, sharing) by name and content."""
    return ConfigDiff(
        added=sorted(new.keys() - old.keys()),
        removed=sorted(old.keys() - new.keys()),
        changed=sorted(k for k in old.keys() & new.keys() if old[k] != new[k]),
        unchanged=sorted(k for k in old.keys() & new.keys() if old[k] == new[k]),
    )


def summary(cfg: Config) -> str:
    """One line for ``ctd check-config``."""
    pulling = sum(1 for p in cfg.plugins.values() if p.pull)
    line = (
        f"{cfg.path}: OK ({len(cfg.plugins)} plugins, {pulling} pulling, "
        f"{len(cfg.rules)} rules, {len(cfg.sharing)} sharing configurations; hash {cfg.hash})"
    )
    if insecure := unverified_plugins(cfg):
        line += f"\nwarning: verify_tls = false, TLS certificates are not verified for: {', '.join(insecure)}"
    return line
