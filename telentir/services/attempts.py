"""Failed attempts at a secret (a password, a one-time code), counted per account and client address.

Three limits, counted with `ratelimit`:
- one account from one address: TELENTIR_AUTH_MAX_ATTEMPTS failures in
  TELENTIR_AUTH_WINDOW_SECONDS (15 minutes) lock that pair until
  the oldest leaves the window. Only the pair: the owner, from another address, still
  gets in, so failures cannot be used to lock anybody out;
- one address, whatever the accounts: TELENTIR_AUTH_ADDRESS_MAX_ATTEMPTS failures in that
  window lock the address (one password tried on many accounts);
- one account, whatever the addresses: past TELENTIR_AUTH_ACCOUNT_MAX_ATTEMPTS failures in
  TELENTIR_AUTH_ACCOUNT_WINDOW_SECONDS (a day) every further attempt waits a delay that
  doubles with each failure, up to TELENTIR_AUTH_MAX_DELAY_SECONDS. Guessing spread over
  many addresses slows to one guess per longest delay (60 an hour by default); the owner
  waits at most that delay, never a lockout. The window is long on purpose: over a short
  one the oldest failures would keep leaving it and the delay would never reach its
  ceiling (a 15-minute window settles near 25 failures and a 36-second delay).

An attempt is counted as a failure *before* its outcome is known (`begin`), in the
transaction that checks the limits, and forgiven when it succeeds (`succeeded`):
checking first and counting after a slow password hash would let parallel guesses all
pass the check. Sign-in failures of every kind (passwords, two-factor codes, reset codes)
count together as `Secret.SIGN_IN`: they guard the same door.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from ..runtime import Runtime
from . import ratelimit


class Secret(Enum):
    """What is being guessed: the failures of each kind are counted apart."""

    SIGN_IN = "sign_in"  # a password, a two-factor code, a password-reset code: account = the email, lower case
    PHONE_CODE = "phone_code"  # the code verifying the account's phone: account = the user id


@dataclass(frozen=True)
class Attempt:
    """An attempt counted as a failure until it is said to have succeeded."""

    pair_bucket: str
    charge: ratelimit.Charge


def sign_in_account(email: str) -> str:
    """The account a sign-in attempt counts against: the email as typed, trimmed, lower case (known or not)."""
    return email.strip().lower()


def begin(rt: Runtime, secret: Secret, account: str, addr: str) -> Attempt:
    """Count an attempt at `account`'s secret from `addr` as a failure; RateLimited (nothing counted) past a limit."""
    limits = _limits(rt, secret, account, ratelimit.network_of(addr))
    return Attempt(limits[0].bucket, ratelimit.charge(rt, limits))


def succeeded(rt: Runtime, attempt: Attempt) -> None:
    """The attempt was right: forgive it, and the earlier failures of the same account and address."""
    ratelimit.refund(rt, attempt.charge)
    ratelimit.clear(rt, attempt.pair_bucket)


def _limits(rt: Runtime, secret: Secret, account: str, network: str) -> list[ratelimit.Limit]:
    config, kind = rt.config, secret.value
    window = float(config.auth_window_seconds)
    return [
        ratelimit.Limit(f"{kind}:pair:{account}|{network}", config.auth_max_attempts, window, "auth_max_attempts"),
        ratelimit.Limit(
            f"{kind}:addr:{network}", config.auth_address_max_attempts, window, "auth_address_max_attempts"
        ),
        ratelimit.Limit(
            f"{kind}:account:{account}",
            config.auth_account_max_attempts,
            float(config.auth_account_window_seconds),
            "auth_account_max_attempts",
            throttle=float(config.auth_max_delay_seconds),
        ),
    ]
