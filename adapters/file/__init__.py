"""The ``file`` adapter: a local file: read indicators from it, or write a list to it.

``adapter`` (config, hooks), ``formats`` (pure parsing), ``push`` (rendering and writing lists).
"""

from ctd.adapters.file.adapter import FileAdapter as FileAdapter

__all__ = ["FileAdapter"]
