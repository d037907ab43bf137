"""The errors a user can fix. The CLI prints their one-line message and exits with code 2."""


class LangplayError(Exception):
    """Bad input: a config, a model path, a dataset, a reward function. The message says what to fix."""


class ConfigError(LangplayError):
    pass


def first_line(exc: BaseException, limit: int = 200) -> str:
    """The first line of an exception's message (its type's name when it has none), cut to `limit` characters:
    what a one-line error quotes from a library's exception."""
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:limit]
