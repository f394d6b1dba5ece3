"""The ``feed`` adapter: a threat feed over HTTP(S): text, CSV, JSON or a MISP feed.

``adapter`` (hooks and the pull), ``config`` (options, presets resolved), ``api`` (HTTP GETs),
``formats``/``records``/``stream`` (pure parsing), ``misp`` (the MISP feed format), ``presets``.
"""

from ctd.adapters.feed.adapter import FeedAdapter as FeedAdapter

__all__ = ["FeedAdapter"]
