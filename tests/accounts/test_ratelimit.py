"""The limit counter and its users, in process on a clock the tests move (telentir/services/ratelimit.py).

Windows, Retry-After, the doubling delay and its ceiling, refunds, all-or-nothing charges, the
address a limit counts (IPv6 by /64), failed attempts per (account, address), and what a
refused sign-up or text leaves behind: nothing. On the scale-out backend the same counts run
on PostgreSQL.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from telentir import close_app, create_app
from telentir.errors import RateLimited
from telentir.runtime import Runtime
from telentir.services import accounts, attempts, ratelimit, texts

from ..support import config_over


class Clock:
    """Stands in for the `time` module inside ratelimit: `time()` is whatever the test set."""

    def __init__(self) -> None:
        self.now = time.time()

    def time(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    fake = Clock()
    monkeypatch.setattr(ratelimit, "time", fake)
    return fake


@pytest.fixture
def limits_rt(tmp_path: Any) -> Iterator[Runtime]:
    """A runtime with small limits: 2 failures per pair, 4 per address, 3 per account before waits of up to 8 s."""
    app = create_app(
        config_over(
            tmp_path / "data",
            log_level="WARNING",
            signup="open",
            auth_max_attempts=2,
            auth_address_max_attempts=4,
            auth_account_max_attempts=3,
            auth_max_delay_seconds=8,
            sms_per_phone_per_hour=2,
            signups_per_address_per_hour=2,
        )
    )
    yield app.extensions["telentir"]
    close_app(app)


def refused(rt: Runtime, name: str) -> float:
    return rt.metrics.registry.get_sample_value("telentir_limit_refusals_total", {"limit": name}) or 0.0


def retry_after(call: Any) -> int:
    """The Retry-After of the RateLimited that `call()` raises."""
    with pytest.raises(RateLimited) as info:
        call()
    assert info.value.status == 429 and info.value.retry_after is not None
    return info.value.retry_after


# --- the counter ------------------------------------------------------------------------------


def test_a_window_refuses_past_most_until_the_oldest_event_leaves(rt, clock):
    limit = ratelimit.Limit(f"t:{uuid.uuid4()}", 3, 100.0, "test_limit")
    for _ in range(3):
        ratelimit.charge(rt, [limit])
        clock.advance(10)
    # the oldest is 30 s old: it leaves the window in 70 s
    assert retry_after(lambda: ratelimit.charge(rt, [limit])) == 70
    assert ratelimit.count(rt, limit.bucket) == 3  # a refusal is not counted
    assert refused(rt, "test_limit") == 1
    clock.advance(69.5)
    assert retry_after(lambda: ratelimit.charge(rt, [limit])) == 1
    clock.advance(0.6)
    ratelimit.charge(rt, [limit])
    assert ratelimit.count(rt, limit.bucket) == 3


def test_a_throttle_waits_a_doubling_delay_up_to_its_ceiling(rt, clock):
    limit = ratelimit.Limit(f"t:{uuid.uuid4()}", 2, 1000.0, "test_throttle", throttle=8.0)
    ratelimit.charge(rt, [limit])
    ratelimit.charge(rt, [limit])
    waits = []
    for _ in range(6):
        waits.append(retry_after(lambda: ratelimit.charge(rt, [limit])))
        clock.advance(waits[-1])
        ratelimit.charge(rt, [limit])  # allowed once the delay is over
    assert waits == [1, 2, 4, 8, 8, 8]


def test_a_refund_forgets_its_events_and_clear_a_whole_bucket(rt, clock):
    one = ratelimit.Limit(f"t:{uuid.uuid4()}", 5, 100.0, "test_limit")
    two = ratelimit.Limit(f"t:{uuid.uuid4()}", 5, 100.0, "test_limit")
    ratelimit.charge(rt, [one])
    clock.advance(1)
    counted = ratelimit.charge(rt, [one, two])
    ratelimit.refund(rt, counted)
    assert (ratelimit.count(rt, one.bucket), ratelimit.count(rt, two.bucket)) == (1, 0)
    ratelimit.clear(rt, one.bucket)
    assert ratelimit.count(rt, one.bucket) == 0


def test_a_charge_counts_in_every_bucket_or_in_none(rt, clock):
    roomy = ratelimit.Limit(f"t:{uuid.uuid4()}", 10, 100.0, "test_roomy")
    full = ratelimit.Limit(f"t:{uuid.uuid4()}", 1, 100.0, "test_full")
    ratelimit.charge(rt, [full])
    clock.advance(40)
    assert retry_after(lambda: ratelimit.charge(rt, [roomy, full])) == 60
    assert ratelimit.count(rt, roomy.bucket) == 0
    assert refused(rt, "test_full") == 1 and refused(rt, "test_roomy") == 0


def test_expired_events_are_deleted(rt, clock):
    limit = ratelimit.Limit(f"t:{uuid.uuid4()}", 5, 10.0, "test_limit")
    ratelimit.charge(rt, [limit])
    clock.advance(11)
    ratelimit.charge(rt, [ratelimit.Limit(f"t:{uuid.uuid4()}", 5, 10.0, "test_limit")])
    assert rt.db.query_value("SELECT COUNT(*) FROM limit_events WHERE bucket = ?", (limit.bucket,)) == 0


@pytest.mark.parametrize(
    ("one", "other", "same"),
    [
        ("203.0.113.5", "203.0.113.5", True),
        ("203.0.113.5", "203.0.113.6", False),
        ("2001:db8:1:2::1", "2001:db8:1:2:ffff:ffff:ffff:ffff", True),  # one /64
        ("2001:db8:1:2::1", "2001:db8:1:3::1", False),
        ("::ffff:203.0.113.5", "203.0.113.5", True),  # IPv4 seen through an IPv6 socket
        ("unknown", "unknown", True),
    ],
)
def test_limits_count_an_ipv4_address_or_an_ipv6_64(one, other, same):
    assert (ratelimit.network_of(one) == ratelimit.network_of(other)) is same


# --- failed attempts ----------------------------------------------------------------------------


def _fail(rt: Runtime, account: str, addr: str, secret: attempts.Secret = attempts.Secret.SIGN_IN) -> None:
    attempts.begin(rt, secret, account, addr)  # counted as a failure, never said to have succeeded


def test_failures_lock_an_account_for_one_address_only(limits_rt, clock):
    account = f"{uuid.uuid4()}@example.com"
    for _ in range(2):
        _fail(limits_rt, account, "203.0.113.1")
    assert retry_after(lambda: _fail(limits_rt, account, "203.0.113.1")) == 900
    assert refused(limits_rt, "auth_max_attempts") == 1
    attempts.succeeded(limits_rt, attempts.begin(limits_rt, attempts.Secret.SIGN_IN, account, "203.0.113.2"))
    # the phone-code count is apart
    attempts.begin(limits_rt, attempts.Secret.PHONE_CODE, account, "203.0.113.1")


def test_a_success_forgives_the_failures_of_its_address_not_of_the_account(limits_rt, clock):
    account = f"{uuid.uuid4()}@example.com"
    _fail(limits_rt, account, "203.0.113.1")
    _fail(limits_rt, account, "203.0.113.2")
    attempts.succeeded(limits_rt, attempts.begin(limits_rt, attempts.Secret.SIGN_IN, account, "203.0.113.1"))
    assert ratelimit.count(limits_rt, f"sign_in:pair:{account}|203.0.113.1") == 0
    assert ratelimit.count(limits_rt, f"sign_in:account:{account}") == 2


def test_one_address_guessing_many_accounts_is_locked(limits_rt, clock):
    for _ in range(4):
        _fail(limits_rt, f"{uuid.uuid4()}@example.com", "203.0.113.9")
    assert retry_after(lambda: _fail(limits_rt, f"{uuid.uuid4()}@example.com", "203.0.113.9")) == 900
    assert refused(limits_rt, "auth_address_max_attempts") == 1


def test_guessing_one_account_from_many_addresses_waits_a_delay(limits_rt, clock):
    account = f"{uuid.uuid4()}@example.com"
    for n in range(3):
        _fail(limits_rt, account, f"203.0.113.{n}")
    waits = []
    for n in range(5):
        waits.append(retry_after(lambda n=n: _fail(limits_rt, account, f"198.51.100.{n}")))
        clock.advance(waits[-1])
        _fail(limits_rt, account, f"198.51.100.{n}")
    assert waits == [1, 2, 4, 8, 8]
    assert refused(limits_rt, "auth_account_max_attempts") == 5
    # the owner is never locked out: after at most the longest delay, the right password works
    owner = lambda: attempts.begin(limits_rt, attempts.Secret.SIGN_IN, account, "192.0.2.1")  # noqa: E731
    clock.advance(retry_after(owner))
    attempts.succeeded(limits_rt, owner())


# --- what a refusal leaves behind: nothing ------------------------------------------------------


class Sender:
    def __init__(self) -> None:
        self.sent: list[str] = []

    def send(self, phone: str, text: str) -> None:
        self.sent.append(phone)


def test_a_refused_text_is_not_sent_and_stores_no_code(limits_rt, clock):
    limits_rt.sms = sender = Sender()
    users = [
        accounts.create_user(limits_rt, f"{uuid.uuid4()}@example.com", phone)
        for phone in ("+1 555 010 9999", "15550109999", "(1) 555-010-9999")
    ]
    accounts.send_phone_code(limits_rt, users[0])
    accounts.send_phone_code(limits_rt, users[1])
    assert retry_after(lambda: accounts.send_phone_code(limits_rt, users[2])) == 3600
    assert sender.sent == ["+15550109999", "15550109999"]
    assert limits_rt.db.query_one("SELECT 1 FROM phone_codes WHERE user_id = ?", (users[2]["id"],)) is None
    assert texts.phone_bucket("+1 555 010 9999") == texts.phone_bucket("15550109999")


def test_a_refused_sign_up_runs_no_scrypt_and_makes_no_account(limits_rt, clock, monkeypatch):
    hashed: list[str] = []
    real_hash = accounts.hash_password
    monkeypatch.setattr(accounts, "hash_password", lambda password: hashed.append(password) or real_hash(password))

    def body() -> dict[str, Any]:
        email = f"{uuid.uuid4()}@example.com"
        return {"email": email, "phone": "+15550100000", "password": "long enough", "confirmPassword": "long enough"}

    accounts.register(limits_rt, body(), "2001:db8:aa:bb::1")
    accounts.register(limits_rt, body(), "2001:db8:aa:bb::2")  # the same /64
    refused_body = body()
    assert retry_after(lambda: accounts.register(limits_rt, refused_body, "2001:db8:aa:bb::3")) == 3600
    assert len(hashed) == 2
    assert limits_rt.db.query_one("SELECT 1 FROM users WHERE email = ?", (refused_body["email"],)) is None
    assert refused(limits_rt, "signups_per_address_per_hour") == 1
    # bad input is answered before counting: it costs nothing and uses no allowance
    with pytest.raises(Exception, match="email"):
        accounts.register(limits_rt, {**body(), "email": "nope"}, "203.0.113.50")
    accounts.register(limits_rt, body(), "203.0.113.50")
    accounts.register(limits_rt, body(), "203.0.113.50")
