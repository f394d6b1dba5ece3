"""Escaping for ctdctl's output: nothing from the daemon may drive the terminal.

Feeds, vendor APIs and configs put text into names, values, tags and error
messages; printed raw, an ESC sequence recolours or clears the operator's
terminal (or sets its title, or worse) and a line break forges table rows.
"""

from __future__ import annotations

import re
from typing import Any, Final

_NAMED_ESCAPES: Final = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}
# What the JSON encoder may leave raw: anything but newline and printable ASCII (filtered further below).
_JSON_SUSPECT: Final = re.compile(r"[^\n -~]")


def _escape_char(c: str) -> str:
    n = ord(c)
    if c in _NAMED_ESCAPES:
        return _NAMED_ESCAPES[c]
    return f"\\x{n:02x}" if n < 0x100 else f"\\u{n:04x}" if n < 0x10000 else f"\\U{n:08x}"


def escape(text: str) -> str:
    """``text`` with each non-printable character shown as a Python-style escape.

    Control characters (C0, DEL, C1), line and paragraph separators, bidi
    overrides and other format characters become ``\\n``, ``\\x1b``, ``\\u202e``...
    Printable text, backslashes included, is unchanged: escaping twice changes
    nothing, and a literal backslash-n in the data looks like an escaped line
    break (``--json`` tells them apart).
    """
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else _escape_char(c) for c in text)


def escaped(data: Any) -> Any:
    """A copy of decoded JSON ``data`` with every string and key passed through :func:`escape`."""
    match data:
        case str():
            return escape(data)
        case dict():
            return {escaped(k): escaped(v) for k, v in data.items()}
        case list() | tuple():
            return [escaped(v) for v in data]
        case _:
            return data


def _json_char(m: re.Match[str]) -> str:
    c = m.group()
    if c.isprintable():
        return c
    n = ord(c)
    if n < 0x10000:
        return f"\\u{n:04x}"
    n -= 0x10000  # a UTF-16 surrogate pair, as JSON spells characters beyond the BMP
    return f"\\u{0xD800 + (n >> 10):04x}\\u{0xDC00 + (n & 0x3FF):04x}"


def json_safe(text: str) -> str:
    """JSON text with the non-printable characters the encoder leaves raw (DEL, C1, U+2028...)
    written as ``\\uXXXX``: it decodes to the same data. Such characters only occur inside
    strings, so the structural newlines of indented JSON stay as they are."""
    return _JSON_SUSPECT.sub(_json_char, text)
