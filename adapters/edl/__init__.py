"""The ``edl`` adapter: plain-text lists (External Dynamic Lists) served over HTTP to firewalls.

``adapter`` (config, hooks), ``server`` (the HTTP server).
"""

from ctd.adapters.edl.adapter import EdlAdapter as EdlAdapter

__all__ = ["EdlAdapter"]
