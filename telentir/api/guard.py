"""The data-plane guard (the hosted service's `objectAuth`)."""
from __future__ import annotations

from typing import Any

from ..services import roots
from .common import runtime, verified_user


def data_plane_user() -> dict[str, Any]:
    """The verified caller, whose root exists from here on."""
    user = verified_user()
    roots.ensure_root(runtime(), user["id"])
    return user


def guard() -> None:
    """`before_request` hook of every data-plane blueprint: 401/403 before anything else."""
    data_plane_user()
