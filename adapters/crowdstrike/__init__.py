"""The ``crowdstrike`` adapter."""
