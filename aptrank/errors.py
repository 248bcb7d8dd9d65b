"""The one config error of aptrank: every room refuses a bad config with :class:`ConfigError`.

Dependency-free on purpose, so that every room (``aptrank.apt`` included, which must stay usable
without the pipeline) can raise and catch it. The message names the file (when known), the dotted
key and the rule: ``configs/demo.yaml: train.patience: expected an integer, got 'two'``.
"""

from __future__ import annotations


class ConfigError(ValueError):
    """A config value or combination breaks a rule.

    ``key`` is the dotted path of the offending value (``train.patience``, ``features.windows[1]``),
    ``reason`` the rule it breaks and ``source`` the file (or other origin) it came from, if known.
    """

    def __init__(self, key: str, reason: str, source: str | None = None) -> None:
        self.key = key
        self.reason = reason
        self.source = source
        where = f"{key}: " if key else ""
        super().__init__(f"{source}: {where}{reason}" if source else f"{where}{reason}")

    @property
    def param(self) -> str:
        """The key (the generator's name for it: one parameter)."""
        return self.key

    def within(self, prefix: str = "", source: str | None = None) -> ConfigError:
        """The same error with ``prefix`` put before its key and ``source`` set (when given)."""
        key = _join(prefix, self.key)
        return type(self)(key, self.reason, source or self.source)


def _join(prefix: str, key: str) -> str:
    if not prefix:
        return key
    if not key:
        return prefix
    return f"{prefix}{key}" if key.startswith("[") else f"{prefix}.{key}"
