"""The one exception type a command turns into a one-line error and a non-zero exit."""


class CfError(Exception):
    """A user-facing failure. ``str(err)`` is the whole message: one line naming the
    file (when there is one) and what is wrong. ``exit_code`` is the command's exit
    status (1; CfUsageError: 2)."""

    exit_code = 1
    # set when a library's state can no longer be trusted (HDF5 after a failed write):
    # a command run as a process then ends at once, without the library's own clean-up
    hard_exit = False

    def __init__(self, message: str, path=None):
        self.path = str(path) if path is not None else None
        super().__init__(f"{self.path}: {message}" if self.path else message)


class CfUsageError(CfError):
    """A usage error that names a file (one input given in two roles, an output named
    for another format, an option missing its companion): exit status 2."""

    exit_code = 2


def brief(text, limit: int = 160) -> str:
    """A foreign message (an exception's text) on one line and at most ``limit``
    characters, cut at a word boundary and ended with "...": never mid-word."""
    text = " ".join(str(text).split())
    if len(text) <= limit:
        return text
    cut = text[:limit - 3]
    space = cut.rfind(" ")
    if text[len(cut)] != " " and space > 0:  # the cut falls inside a word: drop the word
        cut = cut[:space]
    return cut.rstrip(" ,;:") + "..."
