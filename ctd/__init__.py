"""ctd: a threat-exchange daemon for Linux."""

__version__ = "0.1.0"
