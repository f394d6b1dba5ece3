"""Sharing actors: planning and delivery to destinations."""
