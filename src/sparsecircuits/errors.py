"""The one exception type that means "the user gave us something we cannot use".

The CLI turns it into a single line on stderr and a non-zero exit; anything else that escapes
is a bug and keeps its traceback. `first_line` shortens another library's error to fit that line.
"""


class UserError(Exception):
    """Bad input: an unreadable corpus, an unknown preset, a corrupt checkpoint, and so on."""


def first_line(error: BaseException) -> str:
    """The first line of an exception's message (its type's name if it has none): enough to
    say what went wrong in one line without a library's multi-line dump."""
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__
