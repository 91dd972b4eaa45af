"""One exception type for bad user input, printed as a single line by the entry points."""

from __future__ import annotations

import sys
from contextlib import contextmanager
from typing import Iterator

class ConfigError(ValueError):
    """Bad configuration: the message names the config key and how to fix it."""

    def __init__(self, key: str, problem: str, fix: str):
        self.key = key
        super().__init__(f"{key}: {problem}. Fix: {fix}")


def find_config_error(exc: BaseException | None) -> ConfigError | None:
    """Hydra's instantiate wraps errors raised in constructors; dig out ours."""
    while exc is not None:
        if isinstance(exc, ConfigError):
            return exc
        exc = exc.__cause__ or exc.__context__
    return None


@contextmanager
def config_errors_as_one_line() -> Iterator[None]:
    """For entry points: a ConfigError (even wrapped) becomes one stderr line and exit code 2."""
    try:
        yield
    except Exception as exc:  # noqa: BLE001 - anything that is not our config error propagates unchanged
        config_error = find_config_error(exc)
        if config_error is None:
            raise
        print(f"distillscope: error: {config_error}", file=sys.stderr, flush=True)
        sys.exit(2)
