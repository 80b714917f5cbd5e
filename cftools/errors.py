"""The one exception type a command turns into a one-line error and a non-zero exit."""


class CfError(Exception):
    """A user-facing failure. ``str(err)`` is the whole message: one line naming the
    file (when there is one) and what is wrong."""

    def __init__(self, message: str, path=None):
        self.path = str(path) if path is not None else None
        super().__init__(f"{self.path}: {message}" if self.path else message)
