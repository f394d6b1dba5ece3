"""The ``misp`` adapter: pull attributes from a MISP instance, push to a MISP event.

``adapter`` (config, hooks), ``api`` (HTTP calls), ``mapping`` (pure; the one MISP type table).
"""

from ctd.adapters.misp.adapter import MispAdapter as MispAdapter

__all__ = ["MispAdapter"]
