"""Shared code of the ``rss`` and ``webpage`` adapters (not an adapter itself).

- ``html.html_main_text`` / ``html.html_text``: the visible text of a page
  (boilerplate dropped) or of a feed entry's HTML fragment;
- ``extract.extract``: indicators found in that text, refanged, filtered and
  canonicalised by ``ctd.canon``; ``options``: the extraction keys both
  adapters share and running the extractor off the trio thread;
- ``fetch``: one capped GET and the text of what it returned (HTML, PDF, text);
- ``pdf`` and ``worker``: pypdf (and, for ``rss``, feedparser) in a child
  process killed when its time is up.

Everything is bounded: inputs are truncated at a byte/char cap, nothing inside
backtracks on hostile text (see ``tests/test_web_extract.py``), and the parsers
that cannot be interrupted run where they can be killed.
"""
