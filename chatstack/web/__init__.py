"""The browser chat page (no build step)."""
