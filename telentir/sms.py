"""Senders of one-time phone codes: the log (default, for self-hosting) or Twilio."""

from __future__ import annotations

import logging
from typing import Protocol

import requests

from .config import Config
from .errors import UpstreamFailed

log = logging.getLogger("telentir.sms")


class SmsSender(Protocol):
    """Anything that can deliver a text message to a phone number."""

    def send(self, phone: str, text: str) -> None: ...


class LogSender:
    """Writes the message to the server log, where a self-hoster can read the code."""

    def send(self, phone: str, text: str) -> None:
        """Log the message."""
        log.warning("SMS to %s: %s", phone, text)


class TwilioSender:
    """Sends through Twilio's Messages API over `requests`."""

    API = "https://api.twilio.com/2010-04-01/Accounts/{sid}/Messages.json"

    def __init__(self, account_sid: str, auth_token: str, from_number: str, timeout: float = 10.0) -> None:
        self.account_sid, self.auth_token, self.from_number = account_sid, auth_token, from_number
        self.timeout = timeout

    def send(self, phone: str, text: str) -> None:
        """POST the message; UpstreamFailed if Twilio does not accept it."""
        try:
            resp = requests.post(
                self.API.format(sid=self.account_sid),
                timeout=self.timeout,
                auth=(self.account_sid, self.auth_token),
                data={"To": phone, "From": self.from_number, "Body": text},
            )
        except requests.RequestException as exc:
            raise UpstreamFailed("The SMS provider could not be reached; try again.") from exc
        if resp.status_code >= 300:
            log.error("Twilio refused the message: %s %s", resp.status_code, resp.text[:500])
            raise UpstreamFailed("The SMS provider refused the message; check the phone number.")


def make_sender(config: Config) -> SmsSender:
    """The sender the configuration asks for."""
    if config.sms_backend == "twilio":
        return TwilioSender(
            config.twilio_account_sid or "", config.twilio_auth_token or "", config.twilio_from_number or ""
        )
    return LogSender()
