"""The ``edl`` adapter: external dynamic lists served over HTTP.

Firewalls (PAN-OS external dynamic lists and the like) and proxies poll a
plain-text URL. Each sharing configuration with this destination writes one
list, ``<lists_dir>/<name>.txt`` (one value per line, full-replace, newest
first within the list's limits), and the plugin's web server
(``adapters/edl/server.py``) serves it at ``http://BIND/edl/<name>.txt`` (or
``/edl/<path_token>/<name>.txt``).

Lists are files, not memory: the sharing actor and the server are separate
adapter instances and meet in the filesystem, and a list survives a daemon
restart (the sharing ledger does not push an unchanged list again after one).
An empty list is an empty file served as 200: firewalls keep their old list
on a 404.
"""

from __future__ import annotations

import os
from typing import Annotated, Any, ClassVar

import msgspec
import trio

from ctd.adapters.edl.server import LIST_NAME, TOKEN, ServerSettings, parse_bind, serve_edl
from ctd.adapters.file.push import ListFile, remove_orphans, render, writable_target, write_atomically
from ctd.model import (
    ActionSpec,
    Adapter,
    BindContext,
    ConfigError,
    Duration,
    PushResult,
    Secret,
    ShareItem,
    SourceUnavailable,
)

_DEFAULTS = ServerSettings(host="", port=0, lists_dir="")
# Accepted ranges of the server's limits (seconds, connections). Above 256 connections,
# raise the unit's LimitNOFILE= too (each connection and each refusal in progress holds a descriptor).
LIMITS: dict[str, tuple[float, float]] = {
    "request_timeout": (1, 300),
    "send_timeout": (1, 600),
    "response_timeout": (1, 3600),
    "max_connections": (1, 4096),
    "max_connections_per_client": (1, 4096),
    "retry_after": (1, 3600),
}


class EdlConfig(msgspec.Struct, kw_only=True, forbid_unknown_fields=True, frozen=True):
    """The ``edl`` adapter's own ``[plugins.NAME]`` keys."""

    bind: str = "127.0.0.1:8080"
    username: str | None = None  # HTTP Basic auth, with password
    password: Secret | None = None  # secret: password_file / { credential = ... }
    path_token: Secret | None = None  # secret: lists then live at /edl/<token>/NAME.txt only
    lists_dir: str | None = None  # default (bind hook): <daemon.state_dir>/edl/<plugin name>
    # The web server's limits against slow or hostile clients (ServerSettings; ranges in LIMITS).
    request_timeout: Duration = Duration(_DEFAULTS.request_timeout)
    send_timeout: Duration = Duration(_DEFAULTS.send_timeout)
    response_timeout: Duration = Duration(_DEFAULTS.response_timeout)
    max_connections: int = _DEFAULTS.max_connections
    max_connections_per_client: int = _DEFAULTS.max_connections_per_client
    retry_after: int = _DEFAULTS.retry_after

    def __post_init__(self) -> None:
        # msgspec turns a ValueError here into a ValidationError at decode time.
        # Messages never quote a secret.
        for key, (low, high) in LIMITS.items():
            value = getattr(self, key)
            if not low <= value <= high:
                raise ValueError(f"{key} must be between {low:g} and {high:g}, got {value:g}")
        if self.max_connections_per_client > self.max_connections:
            raise ValueError("max_connections_per_client must not exceed max_connections")
        parse_bind(self.bind)
        if (self.username is None) != (self.password is None):
            raise ValueError("give both username and password (HTTP Basic auth), or neither")
        if self.username is not None and (not self.username or ":" in self.username):
            raise ValueError("username must be non-empty and must not contain ':'")
        if self.password is not None and not self.password:
            raise ValueError("password must not be empty")
        if self.path_token is not None and not TOKEN.fullmatch(self.path_token):
            raise ValueError("path_token must be 1-256 characters from A-Z a-z 0-9 . _ ~ -")
        if self.lists_dir is not None and not self.lists_dir:
            raise ValueError("lists_dir must not be empty")


class EdlListParams(msgspec.Struct, kw_only=True, forbid_unknown_fields=True, frozen=True):
    """``params`` of the ``list`` action."""

    name: Annotated[str, msgspec.Meta(pattern=f"^{LIST_NAME.pattern}$")]
    max_entries: Annotated[int, msgspec.Meta(ge=1)] = 50_000
    max_bytes: Annotated[int, msgspec.Meta(ge=1)] | None = None


def write_list(path: str, items: list[ShareItem], rejected: dict[str, str] | None = None) -> int:
    """Replace the list file atomically; its mtime (second) always moves forward.

    One line per value: a value that could break a line is never written (see
    ``file_push.render``) and goes into ``rejected`` with the reason.

    ``Last-Modified`` has one-second resolution: two rewrites within the same
    second would otherwise let a client's ``If-Modified-Since`` hide the second.
    """
    try:
        before: int | None = int(os.stat(path).st_mtime)
    except FileNotFoundError:
        before = None
    size = write_atomically(path, render(items, "text", rejected))
    after = os.stat(path).st_mtime
    if before is not None and int(after) <= before:
        os.utime(path, (before + 1, before + 1))
    return size


class EdlListFile(ListFile):
    """A list file written as it comes (``ListFile``) whose mtime always moves forward (see ``write_list``)."""

    def _commit(self) -> None:
        try:
            before: int | None = int(os.stat(self.path).st_mtime)
        except FileNotFoundError:
            before = None
        super()._commit()
        if before is not None and int(os.stat(self.path).st_mtime) <= before:
            os.utime(self.path, (before + 1, before + 1))


class EdlAdapter(Adapter):
    """Serve sharing targets as plain-text lists over HTTP (a destination only)."""

    Config: ClassVar[type[EdlConfig]] = EdlConfig
    can_pull: ClassVar[bool] = False
    can_push: ClassVar[bool] = True
    can_serve: ClassVar[bool] = True
    ACTIONS: ClassVar[dict[str, ActionSpec]] = {
        "list": ActionSpec(
            description="serve the whole list at http://BIND/edl/NAME.txt (one value per line)",
            mode="full",
            params=EdlListParams,
            size="text",
            entry_overhead=1,  # the newline
        ),
    }

    def __init__(self, name: str, config: EdlConfig, client: Any = None) -> None:
        self.name = name
        self.config = config

    @classmethod
    def bind(cls, options: EdlConfig, ctx: BindContext) -> EdlConfig:
        """Default ``lists_dir`` to ``<daemon.state_dir>/edl/<plugin name>``."""
        if options.lists_dir is not None:
            return options
        return msgspec.structs.replace(options, lists_dir=os.path.join(ctx.state_dir, "edl", ctx.plugin))

    @classmethod
    def target(cls, action: str, params: EdlListParams) -> str:
        return params.name

    def target_present(self, action: str, params: EdlListParams) -> bool:
        """Is the list file there? If not, the next pass rewrites it even if unchanged."""
        return os.path.exists(os.path.join(self._lists_dir(), f"{params.name}.txt"))

    @classmethod
    def limits(cls, action: str, params: EdlListParams) -> tuple[int | None, int | None]:
        return params.max_entries, params.max_bytes

    def _lists_dir(self) -> str:
        if self.config.lists_dir is None:
            raise ConfigError("lists_dir is not set (the config was not bound)", f"$.plugins.{self.name}")
        return self.config.lists_dir

    def list_path(self, name: str) -> str:
        return os.path.join(self._lists_dir(), name + ".txt")

    async def recover(self, action: str, params: EdlListParams) -> list[str]:
        """Delete the temporary files a killed write of the list left beside it."""
        path = self.list_path(params.name)
        try:
            return await trio.to_thread.run_sync(remove_orphans, path)
        except OSError as exc:
            raise SourceUnavailable(f"{path}: cannot remove leftover temporary files: {exc.strerror}") from exc

    async def replace(self, action: str, params: EdlListParams, items: list[ShareItem]) -> PushResult:
        """Write ``items`` (newest first) as the whole list file; values that would break a line come back refused."""
        path = self.list_path(params.name)
        rejected: dict[str, str] = {}
        try:
            await trio.to_thread.run_sync(write_list, path, items, rejected)
        except OSError as exc:
            raise SourceUnavailable(f"{path}: {exc.strerror or exc}") from exc
        return PushResult(rejected=rejected)

    async def open_list(self, action: str, params: EdlListParams) -> EdlListFile:
        """Write the list file as its chunks come; the server serves the old file until the rename."""
        return await EdlListFile.open(self.list_path(params.name), "text")

    def settings(self) -> ServerSettings:
        cfg = self.config
        host, port = parse_bind(cfg.bind)
        return ServerSettings(
            host=host,
            port=port,
            lists_dir=self._lists_dir(),
            username=cfg.username,
            password=cfg.password,
            path_token=cfg.path_token,
            request_timeout=cfg.request_timeout,
            send_timeout=cfg.send_timeout,
            response_timeout=cfg.response_timeout,
            max_connections=cfg.max_connections,
            max_connections_per_client=cfg.max_connections_per_client,
            retry_after=cfg.retry_after,
        )

    async def serve(self, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """Run the web server until cancelled; ``started`` once listening (with the bound address)."""
        s = self.settings()
        try:
            listeners = await trio.open_tcp_listeners(s.port, host=s.host)
        except OSError as exc:
            # The daemon logs this (with the cause) and retries with backoff.
            raise SourceUnavailable(f"cannot listen on {self.config.bind}") from exc
        await serve_edl(s, listeners, task_status=task_status)

    async def check(self) -> str:
        """Connect to the configured address and count the lists on disk."""
        s = self.settings()
        host = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(s.host, s.host)
        try:
            stream = await trio.open_tcp_stream(host, s.port)
        except OSError as exc:
            raise SourceUnavailable(f"nothing listens on {self.config.bind}: {exc.strerror or exc}") from exc
        await stream.aclose()

        def count() -> int:
            try:
                return sum(1 for f in os.listdir(s.lists_dir) if f.endswith(".txt"))
            except FileNotFoundError:
                return 0

        n = await trio.to_thread.run_sync(count)
        return f"listening on {self.config.bind}, {n} list(s) in {s.lists_dir}"

    async def check_target(self, action: str, params: EdlListParams) -> str:
        """The list file can be written in ``lists_dir``."""
        path = self.list_path(params.name)
        try:
            return await trio.to_thread.run_sync(writable_target, path)
        except OSError as exc:
            raise SourceUnavailable(str(exc) if not exc.strerror else f"{path}: {exc.strerror}") from exc
