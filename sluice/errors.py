"""Root of every sluice exception; each package's errors.py derives from it."""


class SluiceError(Exception):
    """Base class of all errors sluice raises on purpose.

    `code` is a stable machine-readable name that the API puts in its error envelope;
    `suggestion` tells the user what to do about it.
    """

    code = "error"

    def __init__(self, message: str, *, suggestion: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.suggestion = suggestion
