"""The one error a bad setting raises."""


class ConfigError(ValueError):
    """A setting has a value the server cannot start with."""
