"""The Ai00-compatible HTTP server: config -> engine -> scheduler -> samplers -> aiohttp routes (spec/api.md)."""
