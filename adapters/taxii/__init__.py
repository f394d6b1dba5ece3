"""The ``taxii`` adapter."""
