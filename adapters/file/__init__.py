"""The ``file`` adapter."""
