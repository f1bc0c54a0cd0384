"""Accounts, sign-in, two-factor, passwords and API keys (docs/protocol.md §8)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from msgspec import UNSET, Meta, UnsetType

from ...services.accounts import MAX_EMAIL, MAX_NAME, MAX_PASSWORD, MIN_PASSWORD
from ...services.credentials import MAX_KEY_NAME
from .base import TEXT_CHARS, ApiKeyId, Count, Schema, Timestamp, UserId, text

SignInStatus = Literal["ok", "phone_not_verified", "2fa_required"]
Password = Annotated[str, text(MIN_PASSWORD, MAX_PASSWORD)]
AnyPassword = Annotated[str, text(0, MAX_PASSWORD)]
Email = Annotated[str, text(0, MAX_EMAIL)]
# Something not blank: the server trims before comparing.
Code = Annotated[
    str,
    Meta(
        pattern=f"^{TEXT_CHARS}*[^\\s\\x00\\ud800-\\udfff]{TEXT_CHARS}*$",
        min_length=1,
        max_length=64,
        description="a 6-digit TOTP code, or (where allowed) a recovery code",
    ),
]


class AuthToken(Schema):
    """A session token (also set as the `token` cookie)."""

    status: SignInStatus
    token: Annotated[str, Meta(min_length=1)]


class Register(Schema):
    """POST /auth/register: a new account (confirmPassword equal to password)."""

    email: Annotated[
        str, text(1, description="a valid address, unique case-insensitively", examples=["ada@example.com"])
    ]
    phone: Annotated[str, text(7, description="7-15 digits, optionally starting with +; spaces . - ( ) removed")]
    password: Password
    confirmPassword: Annotated[Password, Meta(description="equal to password")]
    firstName: Annotated[str, text(0, MAX_NAME)] | UnsetType | None = UNSET
    lastName: Annotated[str, text(0, MAX_NAME)] | UnsetType | None = UNSET
    # A string with TELENTIR_SIGNUP=invite (a wrong or missing one is a 403); ignored otherwise.
    invite: Annotated[Any, Meta(description="the single-use code of `telentir invites create`")] = UNSET


class Login(Schema):
    """POST /auth/login."""

    email: Email
    password: AnyPassword
    remember: Annotated[Any, Meta(description="any truthy JSON value: the 30-day lifetime")] = UNSET


class Profile(Schema):
    """The caller as GET /auth shows it."""

    id: UserId
    email: Annotated[str, Meta(min_length=1)]
    firstName: str
    lastName: str
    phoneVerified: bool
    twoFactorEnabled: bool


class Usage(Schema):
    """Ciphertext stored by the user, and the quota if any."""

    bytes: Count
    quotaBytes: Annotated[int, Meta(ge=1)] | None


class WhoAmI(Schema):
    """GET /auth."""

    status: SignInStatus
    auth: Profile
    usage: Usage


class Status(Schema):
    """A bare status answer."""

    status: str


class CodeBody(Schema):
    """A one-time code (SMS, TOTP or recovery)."""

    code: Code


class TwoFactorSetup(Schema):
    """A new pending TOTP secret."""

    secret: Annotated[str, Meta(min_length=32, pattern="^[A-Z2-7]+$")]
    otpauthUrl: Annotated[str, Meta(min_length=1)]


class RecoveryCodes(Schema):
    """Ten single-use recovery codes, shown once."""

    recoveryCodes: Annotated[list[Annotated[str, Meta(min_length=8)]], Meta(min_length=10, max_length=10)]


class NewSession(Schema):
    """A full session after 2FA or a password change."""

    status: Literal["ok"]
    token: Annotated[str, Meta(min_length=1)]


class PasswordChange(Schema):
    """POST /auth/password."""

    currentPassword: AnyPassword
    newPassword: Password


class ResetRequest(Schema):
    """POST /auth/password/reset."""

    email: Email


class ResetConfirm(Schema):
    """POST /auth/password/reset/confirm."""

    email: Email
    code: Code
    newPassword: Password


class ApiKeyCreate(Schema):
    """PUT /api-keys (the body may be empty)."""

    name: Annotated[str, Meta(pattern=Code.__metadata__[0].pattern, min_length=1, max_length=MAX_KEY_NAME)] | None = (
        None
    )


class ApiKey(Schema):
    """An API key (the secret `key` only when created)."""

    id: ApiKeyId
    name: Annotated[str, Meta(min_length=1, max_length=MAX_KEY_NAME)]
    last_used_at: Timestamp | None
    created_at: Timestamp
    key: Annotated[str, Meta(pattern="^tlk_[A-Za-z0-9_-]+$", description="only when created")] | UnsetType = UNSET
