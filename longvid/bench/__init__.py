"""The long-range memory benchmark: generated long videos and the scaling study."""
