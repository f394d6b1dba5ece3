"""Source actors: scheduled pulls into the store."""
