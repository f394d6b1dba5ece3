"""Shared code for the ``rss`` and ``webpage`` adapters.

Pure functions only (no I/O), so the adapters can run them in
``trio.to_thread.run_sync`` under the actor's deadline:

- ``html.html_main_text`` / ``html.html_text``: the visible text of a page
  (boilerplate dropped) or of a feed entry's HTML fragment;
- ``extract.extract``: indicators found in that text, refanged, filtered and
  canonicalised by ``ctd.canon``.

Both are bounded: inputs are truncated at a byte/char cap and nothing inside
backtracks on hostile text (see ``tests/test_web_extract.py``).
"""
