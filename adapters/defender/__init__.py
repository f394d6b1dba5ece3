"""The ``defender`` adapter (Microsoft Defender for Endpoint): pull alert evidence or others' custom
indicators; push custom indicators, withdrawn by the ids ctd recorded.

``adapter`` (config, hooks), ``api`` (OAuth2 and HTTP calls), ``mapping`` (pure).
"""

from ctd.adapters.defender.adapter import DefenderAdapter as DefenderAdapter

__all__ = ["DefenderAdapter"]
