"""The ``feed`` adapter."""
