"""What a valid config does that the operator should still hear about.

Logged once per load (start and every reload, by the daemon) and shown by
``ctd check-config`` and ``ctdctl plugins list``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import structlog

from ctd.plugins import adapter_class

if TYPE_CHECKING:
    from ctd.config import Config, PluginConfig

log = structlog.get_logger("ctd.config")


def tls_unverified(plugin: PluginConfig) -> bool:
    """Whether a plugin's options say ``verify_tls = false`` (its adapter's ``verifies_tls`` hook)."""
    return not adapter_class(plugin.adapter).verifies_tls(plugin.options)


def unverified_plugins(cfg: Config) -> list[str]:
    """Names of the plugins that do not verify TLS certificates."""
    return sorted(name for name, p in cfg.plugins.items() if tls_unverified(p))


def log_warnings(cfg: Config) -> None:
    """Log what a loaded config does that an operator should know about (once per load)."""
    for name in unverified_plugins(cfg):
        log.warning(
            "TLS certificate verification is disabled: any host can impersonate the server",
            ctd_event="tls_verification_disabled",
            ctd_plugin=name,
        )
