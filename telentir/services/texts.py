"""Text messages to phones, at most TELENTIR_SMS_PER_PHONE_PER_HOUR to one number in any hour.

Counted per phone number, whichever accounts ask: with open sign-up anybody can make
accounts naming somebody else's phone, and each text costs money (SMS pumping). The count
is kept by `ratelimit`, so every worker process and node shares it. Every text the server
sends (phone verification now, password-reset codes later) goes through `send`.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from ..runtime import Runtime
from . import ratelimit


def phone_bucket(phone: str) -> str:
    """The bucket of a phone number: its digits alone, so `+1 555…` and `1555…` count as one number."""
    return "sms:phone:" + re.sub(r"\D", "", phone)


def send(rt: Runtime, phone: str, text: str, prepare: Callable[[], None] | None = None) -> None:
    """Count a text to `phone`, run `prepare` (store what the text carries), then send it.

    Past the limit: RateLimited (429 with Retry-After), and neither `prepare` runs nor
    anything is sent. A text counts once counted, even if the provider then fails: whether
    it went out is unknown.
    """
    limit = ratelimit.Limit(
        phone_bucket(phone), rt.config.sms_per_phone_per_hour, ratelimit.HOUR, "sms_per_phone_per_hour"
    )
    ratelimit.charge(rt, [limit])
    if prepare is not None:
        prepare()
    rt.sms.send(phone, text)
