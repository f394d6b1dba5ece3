"""structlog setup: journald, a console format or JSON lines on stderr; per-task context, secrets redacted.

On a terminal (``ctd run`` in the foreground) entries are one readable line
each (structlog's ConsoleRenderer; colours only where the terminal has them,
none with ``$NO_COLOR``). Otherwise, unless stderr is the journal, every entry is
one JSON object per line::

    {"ts": "2026-11-27T10:00:00.123Z", "level": "info", "event": "...", ...}

Per-trio-task context (``structlog.contextvars.bind_contextvars(source=...)``)
is merged in. Values of secret-ish keys (``token``, ``password``, ...) are
replaced with ``"***"`` at any depth of dicts/lists before rendering.

The output sink is chosen in one place, :func:`_renderer_for`, at configure
time: when the stream is the journal stream (``$JOURNAL_STREAM`` matches its
``fstat``, see :mod:`ctd.service.journal`), entries go over journald's native protocol
as indexed fields (``ctd_event`` -> ``CTD_EVENT``, ...; ``event`` ->
``MESSAGE``, ``level`` -> ``PRIORITY``), else as JSON lines on the stream.
Redaction runs before either sink.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, NamedTuple, TextIO

import msgspec
import structlog
from structlog.typing import EventDict, Processor, WrappedLogger

from ctd.errors import cap
from ctd.service import journal as journal

SECRET_KEYS = frozenset({"token", "password", "secret", "api_key", "client_secret", "authorization"})
REDACTED = "***"

_LEVELS = ("debug", "info", "warning", "warn", "error", "critical")


def get_logger(name: str | None = None) -> Any:
    """Return a lazy structlog logger; a *name* is logged as ``logger_name=name``.

    Lazy: it follows later :func:`configure_logging` calls (e.g. a new level).
    """
    if name is None:
        return structlog.get_logger()
    return structlog.get_logger(name, logger_name=name)


def configure_logging(level: str = "info", stream: TextIO | None = None) -> None:
    """(Re)configure structlog; safe to call again, e.g. on reload with a new level."""
    lvl = level.lower()
    if lvl not in _LEVELS:
        raise ValueError(f"unknown log level {level!r}; expected one of {', '.join(_LEVELS)}")
    sink = _renderer_for(sys.stderr if stream is None else stream)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            _add_timestamp,
            structlog.processors.StackInfoRenderer(),
            structlog.processors.format_exc_info,
            _cap_traceback,
            redact_secrets,
            _order_keys,
            sink.renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(lvl),
        logger_factory=sink.logger_factory,
        context_class=dict,
        cache_logger_on_first_use=False,
    )


def _add_timestamp(_logger: WrappedLogger, _name: str, event_dict: EventDict) -> EventDict:
    """ISO 8601 UTC with milliseconds, e.g. ``2026-11-27T10:00:00.123Z``."""
    now = datetime.now(UTC)
    event_dict["ts"] = now.isoformat(timespec="milliseconds").replace("+00:00", "Z")
    return event_dict


def _cap_traceback(_logger: WrappedLogger, _name: str, event_dict: EventDict) -> EventDict:
    """Each line of a rendered traceback capped (``ctd.errors.cap``): a peer's 100 MB error text
    in an exception message must not become a 100 MB log line."""
    text = event_dict.get("exception")
    if isinstance(text, str) and len(text) > 4096:
        event_dict["exception"] = "\n".join(cap(line) for line in text.split("\n"))
    return event_dict


def _order_keys(_logger: WrappedLogger, _name: str, event_dict: EventDict) -> EventDict:
    """Put ts, level, event first so lines read well; the rest keep their order."""
    head = {k: event_dict.pop(k) for k in ("ts", "level", "event") if k in event_dict}
    return {**head, **event_dict}


def _redact(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: REDACTED if _is_secret(k) else _redact(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_redact(v) for v in value]
    return value


def _is_secret(key: Any) -> bool:
    return isinstance(key, str) and key.lower().replace("-", "_") in SECRET_KEYS


def redact_secrets(_logger: WrappedLogger, _name: str, event_dict: EventDict) -> EventDict:
    """Replace the value of every secret-ish key (at any depth) with ``"***"``."""
    return _redact(event_dict)


_encoder = msgspec.json.Encoder(enc_hook=str)


def _dumps(obj: Any, **_kw: Any) -> str:
    try:
        return _encoder.encode(obj).decode()
    except (TypeError, ValueError, msgspec.EncodeError):
        # e.g. non-string dict keys msgspec refuses; never lose the line.
        return json.dumps(obj, default=str, skipkeys=True)


class _Sink(NamedTuple):
    renderer: Processor
    logger_factory: Any


FORMAT_ENV = "CTD_LOG_FORMAT"  # "json" or "console": overrides the choice by terminal


def _renderer_for(stream: TextIO) -> _Sink:
    """Pick the final renderer and the logger writing its output.

    journald's native protocol when *stream* is the journal stream
    (``JOURNAL_STREAM`` matches ``fstat``); else a human console format when
    *stream* is a terminal (or ``$CTD_LOG_FORMAT=console``), JSON lines otherwise
    (or with ``$CTD_LOG_FORMAT=json``).
    """
    if journal.stream_is_journal(stream):
        return _Sink(renderer=_pass_dict, logger_factory=_JournalLoggerFactory(_journal_sender(), stream))
    wanted = os.environ.get(FORMAT_ENV, "").strip().lower()
    if wanted == "console" or (wanted != "json" and _is_terminal(stream)):
        return _Sink(renderer=_console(stream), logger_factory=structlog.WriteLoggerFactory(file=stream))
    return _Sink(
        renderer=structlog.processors.JSONRenderer(serializer=_dumps),
        logger_factory=structlog.WriteLoggerFactory(file=stream),
    )


def _is_terminal(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def colours_wanted(stream: TextIO, environ: Mapping[str, str] | None = None) -> bool:
    """Colours only on a terminal that has them, and never with ``$NO_COLOR`` set (no-color.org)."""
    env = os.environ if environ is None else environ
    if "NO_COLOR" in env or env.get("TERM", "dumb") in ("", "dumb"):
        return False
    return _is_terminal(stream)


def _console(stream: TextIO) -> Processor:
    """structlog's ConsoleRenderer: ``10:00:00 [info ] daemon ready  sources=3 ...``; values as they are."""
    return structlog.dev.ConsoleRenderer(
        colors=colours_wanted(stream),
        timestamp_key="ts",
        pad_event_to=32,
        exception_formatter=structlog.dev.plain_traceback,
        sort_keys=False,
    )


def _pass_dict(_logger: WrappedLogger, _name: str, event_dict: EventDict) -> EventDict:
    """Final processor for the journal: structlog passes a returned dict as kwargs."""
    return event_dict


_sender: journal.JournalSender | None = None


def _journal_sender() -> journal.JournalSender:
    """One sender (one socket) for the process, kept across reconfigures."""
    global _sender
    path = journal.socket_path()
    if _sender is None or _sender.path != path:
        if _sender is not None:
            _sender.close()
        _sender = journal.JournalSender(path)
    return _sender


class _JournalLoggerFactory:
    def __init__(self, sender: journal.JournalSender, stream: TextIO) -> None:
        self._logger = journal.JournalLogger(sender, fallback=lambda ed: _write_json_line(stream, ed))

    def __call__(self, *_args: Any) -> journal.JournalLogger:
        return self._logger


def _write_json_line(stream: TextIO, event_dict: dict[str, Any]) -> None:
    """Fallback when journald is unreachable: the JSON line, on the (journal) stream."""
    stream.write(_dumps(event_dict) + "\n")
    stream.flush()
