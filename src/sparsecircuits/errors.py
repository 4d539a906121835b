"""The one exception type that means "the user gave us something we cannot use".

The CLI turns it into a single line on stderr and a non-zero exit; anything else that escapes
is a bug and keeps its traceback.
"""


class UserError(Exception):
    """Bad input: an unreadable corpus, an unknown preset, a corrupt checkpoint, and so on."""
