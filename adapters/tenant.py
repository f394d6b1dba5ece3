"""The config hooks of an adapter whose connection comes from a ``[tenants.NAME]`` table.

Netskope, Defender, Mimecast and SentinelOne plugins name a tenant (``tenant =
"NAME"``) whose table holds the URL and credentials shared by every plugin of
that tenant. Their options carry ``tenant`` (the table's name) and
``resolved_tenant`` (filled in by ``bind`` when the config loads; never by the
operator). ``TenantHooks`` is those four hooks once; an adapter lists it before
``Adapter`` and names its tenant table's Struct in ``TENANT``.
"""

from __future__ import annotations

from typing import Any, ClassVar

import httpx
import msgspec

from ctd.adapters.http import make_client
from ctd.model import BindContext, ConfigError


class TenantHooks:
    """``check_plugin``, ``bind``, ``verifies_tls`` and ``make_client`` for tenant-bound options."""

    TENANT: ClassVar[type[Any]]  # the Struct of the adapter's [tenants.NAME] table
    CLIENT_HEADERS: ClassVar[dict[str, str] | None] = None  # sent with every request of the client

    @classmethod
    def check_plugin(cls, pull: bool, options: Any) -> None:
        if options.resolved_tenant is not None:
            raise ValueError("resolved_tenant is filled in from [tenants.NAME]; do not set it")

    @classmethod
    def bind(cls, options: Any, ctx: BindContext) -> Any:
        """Fill in ``resolved_tenant`` from the ``[tenants.NAME]`` table the plugin names."""
        return msgspec.structs.replace(options, resolved_tenant=ctx.tenant(options.tenant, cls.TENANT))

    @classmethod
    def verifies_tls(cls, options: Any) -> bool:
        return options.resolved_tenant is None or options.resolved_tenant.verify_tls

    @classmethod
    def make_client(cls, options: Any) -> httpx.AsyncClient:
        if options.resolved_tenant is None:
            raise ConfigError(f"tenant {options.tenant!r} was not bound")
        return make_client(options.resolved_tenant, headers=cls.CLIENT_HEADERS)
