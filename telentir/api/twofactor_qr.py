"""The QR code of a pending two-factor secret, as SVG: /api/auth/2fa/qr.svg (docs/protocol.md).

The console shows it while the person scans it with an authenticator app. It is drawn here
(segno, no script, no CDN) so the page needs no QR library of its own.
"""

from __future__ import annotations

import io

import segno
from flask import Blueprint, Response

from ..services import twofactor
from .common import no_store, runtime, session_principal
from .registry import Answer, operation

bp = Blueprint("twofactor_qr", __name__, url_prefix="/api")

SVG = "image/svg+xml"
SCALE = 4  # pixels per module: a 33-module code (plus its quiet zone) is 164 px wide


def qr_svg(text: str) -> bytes:
    """`text` as a QR code in SVG: black on white (readable on a dark page too), medium error correction."""
    buffer = io.BytesIO()
    segno.make(text, error="m").save(buffer, kind="svg", scale=SCALE, dark="#000", light="#fff")
    return buffer.getvalue()


@bp.get("/auth/2fa/qr.svg")
@operation(
    "get_two_factor_qr",
    "Two-factor",
    "The pending TOTP secret's otpauth URL as a QR code (SVG) to scan (a session, not an API key: else 403 "
    "session_required); 409 2fa_not_set_up when no secret is pending (none set up, or already enabled)",
    ok=Answer(type=str, description="The QR code", media=SVG, example='<svg xmlns="http://www.w3.org/2000/svg">'),
    errors=(403, 409),
    auth="user",
    secret=True,
)
@no_store
def two_factor_qr() -> Response:
    """The QR code of the pending secret's otpauth URL: the secret itself, so never cached."""
    url = twofactor.pending_otpauth_url(runtime(), session_principal().user)
    return Response(qr_svg(url), mimetype=SVG)
