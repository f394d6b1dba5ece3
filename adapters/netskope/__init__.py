"""The ``netskope`` adapter."""
