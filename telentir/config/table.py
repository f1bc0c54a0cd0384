"""The shape of a setting: `setting()` declares a `Config` field, `Setting` is that field read back as a row."""

from __future__ import annotations

import copy
from dataclasses import MISSING, dataclass, field, fields
from typing import Any

from .parsers import Parser

ENV_PREFIX = "TELENTIR_"


def setting(default: Any, parse: Parser, doc: str, *, env: str | None = None, secret: bool = False) -> Any:
    """A `Config` field: its default, the parser of its environment or override value, its meaning for the docs.

    `env` names the environment variable when it is not TELENTIR_ + the field's name in capitals;
    a `secret` is left out of `repr` and of error messages, and its default out of the docs.
    """
    metadata = {"parse": parse, "doc": doc, "env": env, "secret": secret}
    if isinstance(default, dict):  # mutable: each Config gets its own copy
        return field(default_factory=lambda: copy.deepcopy(default), repr=not secret, metadata=metadata)
    return field(default=default, repr=not secret, metadata=metadata)


@dataclass(frozen=True)
class Setting:
    """One setting as loading and the docs see it, read off its `Config` field."""

    env: str
    attr: str
    parse: Parser
    doc: str
    secret: bool
    default: Any

    @property
    def optional(self) -> bool:
        """Unset is a valid value (the default is None): an override may give None."""
        return self.default is None


def rows_of(config_class: type) -> tuple[Setting, ...]:
    """The settings declared as fields of `config_class` with `setting()`, in declaration order."""
    rows = []
    for f in fields(config_class):
        default = f.default_factory() if f.default is MISSING and f.default_factory is not MISSING else f.default
        env = f.metadata["env"] or ENV_PREFIX + f.name.upper()
        rows.append(Setting(env, f.name, f.metadata["parse"], f.metadata["doc"], f.metadata["secret"], default))
    return tuple(rows)
