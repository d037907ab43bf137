"""The errors a user can fix. The CLI prints their one-line message and exits with code 2."""


class LangplayError(Exception):
    """Bad input: a config, a model path, a dataset, a reward function. The message says what to fix."""


class ConfigError(LangplayError):
    pass
