"""Every setting in one place: defaults in code, then environment variables, then overrides.

Each setting is declared once, as a field of `Config` (`settings.py`) carrying its parser, meaning,
environment name and secrecy; `SETTINGS` is read off those fields. `load_config` runs the
environment's text and overrides' values through the same parsers (`parsers.py`, `billing.py`),
then the checks across settings (`validation.py`). docs/configuration.md is generated from the
declaration: `make docs` (`python -m telentir.config.docs > docs/configuration.md`).
"""

from .billing import DEFAULT_PLANS, TOPUP_MAX_USD, check_plans, origin_of
from .errors import ConfigError
from .loading import load_config
from .parsers import SIGNUP_MODES
from .settings import SETTINGS, Config, Setting, default_workers

__all__ = [
    "DEFAULT_PLANS",
    "SETTINGS",
    "SIGNUP_MODES",
    "TOPUP_MAX_USD",
    "Config",
    "ConfigError",
    "Setting",
    "check_plans",
    "default_workers",
    "load_config",
    "origin_of",
]
