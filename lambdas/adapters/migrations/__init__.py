"""Versioned SQL migrations, applied in order at start (see lambdas.adapters.db)."""
