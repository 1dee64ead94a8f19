"""The usage-ingest hot path: fast validation and normalisation of events (pure, no I/O)."""
