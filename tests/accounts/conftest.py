"""Accounts and credentials: sign-up policy, sign-in, two-factor, the token cookie, abuse limits.

Every module here also runs on PostgreSQL + S3 + Redis unless it is marked `embedded_only`.
The modules use the session's `live_server` or start servers of their own settings; they
share no fixture beyond the root conftest's.
"""

SCALE_OUT = True
