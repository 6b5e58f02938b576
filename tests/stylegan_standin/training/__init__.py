"""Stand-in training package."""
