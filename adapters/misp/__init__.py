"""The ``misp`` adapter."""
