"""Checks across settings, run after every value has passed its own parser."""

from __future__ import annotations

from .billing import TOPUP_MAX_USD
from .errors import ConfigError
from .settings import Config


def check_config(config: Config) -> Config:
    """`config` if its settings fit together, else ConfigError naming the variables at odds."""
    if config.default_plan not in config.plans:
        raise ConfigError(f"TELENTIR_DEFAULT_PLAN={config.default_plan!r} is not a key of the plan catalog")
    if config.sms_backend == "twilio" and not (
        config.twilio_account_sid and config.twilio_auth_token and config.twilio_from_number
    ):
        raise ConfigError(
            "TELENTIR_SMS_BACKEND=twilio needs TWILIO_ACCOUNT_SID, TWILIO_AUTH_TOKEN and TWILIO_FROM_NUMBER"
        )
    if not config.topup_min_usd <= config.topup_max_usd <= TOPUP_MAX_USD:
        raise ConfigError(
            f"TELENTIR_TOPUP_MIN_USD ({config.topup_min_usd}) and TELENTIR_TOPUP_MAX_USD ({config.topup_max_usd}) "
            f"must satisfy 1 <= min <= max <= {TOPUP_MAX_USD}"
        )
    return config
