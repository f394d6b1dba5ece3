"""The daemon: root nursery, supervisor, reload, once-mode."""
