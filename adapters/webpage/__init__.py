"""The ``webpage`` adapter: indicators from web pages (HTML main text, PDF, plain text), optionally as a snapshot."""

from ctd.adapters.webpage.adapter import WebpageAdapter as WebpageAdapter

__all__ = ["WebpageAdapter"]
