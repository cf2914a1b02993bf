"""The local lab of real hosts; only the CLI and the tests use it, never the core."""
