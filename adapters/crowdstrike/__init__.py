"""The ``crowdstrike`` adapter: CrowdStrike Falcon IOC management as a source and a destination.

``adapter`` (config, hooks), ``api`` (OAuth2 and HTTP calls), ``mapping`` (pure).
"""

from ctd.adapters.crowdstrike.adapter import CrowdStrikeAdapter as CrowdStrikeAdapter

__all__ = ["CrowdStrikeAdapter"]
