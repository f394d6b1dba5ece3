"""The ``taxii`` adapter: a TAXII 2.1 collection as a source and a destination.

``adapter`` (config, hooks), ``api`` (HTTP calls), ``mapping`` and ``stix`` (pure).
"""

from ctd.adapters.taxii.adapter import TaxiiAdapter as TaxiiAdapter

__all__ = ["TaxiiAdapter"]
