"""The ``edl`` adapter."""
