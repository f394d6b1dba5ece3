"""The ``rss`` adapter: indicators from RSS/Atom feed entries and their articles.

``adapter`` (config, pull), ``parse`` (feedparser in a child process), ``entries`` (pure reading of entries).
"""

from ctd.adapters.rss.adapter import RssAdapter as RssAdapter

__all__ = ["RssAdapter"]
