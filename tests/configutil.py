"""Config helpers for tests."""

from __future__ import annotations

from typing import Any

import msgspec

from ctd.config import _dec_hook


def decode_options(obj: Any, tp: Any) -> Any:
    """An adapter's options decoded as the config loader decodes them (durations, secrets); msgspec's errors."""
    return msgspec.convert(obj, tp, dec_hook=_dec_hook)
