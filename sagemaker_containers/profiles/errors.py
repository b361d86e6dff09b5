"""The one error a model profile raises: a single sentence saying what is wrong and how to fix it."""

from __future__ import annotations


class ProfileError(ValueError):
    """A model profile that cannot be deployed as written. `message` is one sentence, safe to print."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message
