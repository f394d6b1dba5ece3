"""The ``mimecast`` adapter (API 2.0): pull URL-click and attachment detections and the threat-intel feed;
push Managed URLs and blocked sender policies, withdrawn by the ids ctd recorded.

``adapter`` (config, hooks), ``api`` (OAuth2 and HTTP calls), ``mapping`` (pure).
"""

from ctd.adapters.mimecast.adapter import MimecastAdapter as MimecastAdapter

__all__ = ["MimecastAdapter"]
