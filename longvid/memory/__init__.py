"""Memory mechanisms as small modules with explicit per-stream state."""
