"""Dialect-specific parts of the store: one module per backend."""
