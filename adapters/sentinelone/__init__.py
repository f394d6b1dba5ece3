"""The ``sentinelone`` adapter: pull threats' file hashes (or others' IOCs) from an account or site scope;
push Threat Intelligence IOCs, withdrawn by value restricted to the uuids ctd recorded.

``adapter`` (config, hooks), ``api`` (HTTP calls), ``mapping`` (pure).
"""

from ctd.adapters.sentinelone.adapter import SentinelOneAdapter as SentinelOneAdapter

__all__ = ["SentinelOneAdapter"]
