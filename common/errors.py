"""The one exception type that means "the user asked for something we cannot do"."""


class UserError(Exception):
    """A problem in the user's input, reported as one line without a traceback."""


class AgreedError(UserError):
    """A UserError that every rank raises together (from a shared decision), so the job can end
    cleanly with one message instead of aborting the other ranks."""


def one_line(exc: BaseException) -> str:
    """The user's message of a UserError, also when a DataLoader worker re-raised it wrapped in
    its own traceback ("Caught UserError in DataLoader worker process 0. Original Traceback...")."""
    lines = [line for line in str(exc).splitlines() if line.strip()]
    if len(lines) > 1 and lines[0].startswith("Caught "):
        last = lines[-1]
        for prefix in ("common.errors.UserError: ", "common.errors.AgreedError: ", "UserError: "):
            if last.startswith(prefix):
                return last[len(prefix):]
        return last
    return " ".join(line.strip() for line in lines)
