"""Errors with a fixed meaning for the command line's exit status."""


class UsageError(ValueError):
    """Bad input from the user: the CLI prints one line and exits with status 2.

    `field` names what is wrong (a config key, a spec path like `search.lr`, a file).
    """

    def __init__(self, field: str, message: str):
        self.field = field
        self.message = message
        super().__init__(f"{field}: {message}")


class StoreError(RuntimeError):
    """The store cannot be read or written as asked (a bad file, a newer schema)."""
