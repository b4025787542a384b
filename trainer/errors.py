"""The one exception type that means "the user asked for something we cannot do"."""


class UserError(Exception):
    """A problem in the user's input, reported as one line without a traceback."""
