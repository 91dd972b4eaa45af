"""One exception type for bad user input, printed as a single line by the entry points."""


class ConfigError(ValueError):
    """Bad configuration: the message names the config key and how to fix it."""

    def __init__(self, key: str, problem: str, fix: str):
        self.key = key
        super().__init__(f"{key}: {problem}. Fix: {fix}")
