"""Building a `Config`: defaults, then environment variables, then overrides, each value through its parser."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from .errors import ConfigError
from .settings import SETTINGS, SETTINGS_BY_ATTR, Config, Setting
from .validation import check_config


def load_config(overrides: Mapping[str, Any] | None = None, environ: Mapping[str, str] | None = None) -> Config:
    """Defaults, then environment variables, then `overrides` (attribute names); validated.

    An override may be the typed value (10, a Path, a tuple) or the environment's text ("10"): both go
    through the setting's parser, so an override is refused exactly where the variable would be.
    An empty string means unset in both; None is accepted only by a setting whose default is None.
    """
    environ = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    for setting in SETTINGS:
        raw = environ.get(setting.env)
        if raw is not None and raw != "":
            values[setting.attr] = parse_value(setting, raw)
    values.update(_parse_overrides(overrides or {}))
    return check_config(replace(Config(), **values))


def _parse_overrides(overrides: Mapping[str, Any]) -> dict[str, Any]:
    unknown = set(overrides) - set(SETTINGS_BY_ATTR)
    if unknown:
        raise ConfigError(f"unknown settings: {', '.join(sorted(unknown))}")
    values: dict[str, Any] = {}
    for attr, value in overrides.items():
        setting = SETTINGS_BY_ATTR[attr]
        if value is None and setting.optional:
            values[attr] = None
        elif value == "":
            values[attr] = setting.default
        else:
            values[attr] = parse_value(setting, value)
    return values


def parse_value(setting: Setting, value: object) -> Any:
    """`value` (text from the environment or an override's typed value) parsed, or ConfigError naming the variable."""
    try:
        return setting.parse(value)
    except (ValueError, TypeError) as exc:
        shown = "(hidden)" if setting.secret else repr(value)  # never echo a secret into logs
        raise ConfigError(f"{setting.env}={shown} is not valid: {exc}") from exc
