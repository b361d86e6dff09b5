"""Shared test helpers (model fixtures and the like)."""
