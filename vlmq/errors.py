"""The one error type for bad client input found outside the API (image bytes, URLs): the API
turns it into its JSON error with the same code and status."""

from __future__ import annotations


class InputError(ValueError):
    def __init__(self, code: str, message: str, status: int = 422) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status
