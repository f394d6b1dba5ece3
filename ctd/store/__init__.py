"""The store actor and everything that touches SQLite."""
