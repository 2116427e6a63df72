"""Model files: reading, writing, converting, and canonicalizing weights (spec/formats.md)."""
