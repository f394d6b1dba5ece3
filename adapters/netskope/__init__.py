"""The ``netskope`` adapter: pull malware and malsite alerts from a Netskope tenant; write its URL and file hash lists.

``adapter`` (config, hooks), ``api`` (HTTP calls), ``mapping`` (pure).
"""

from ctd.adapters.netskope.adapter import NetskopeAdapter as NetskopeAdapter

__all__ = ["NetskopeAdapter"]
