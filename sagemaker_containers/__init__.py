"""LMI model profiles and the local LMI-compatible model server."""
