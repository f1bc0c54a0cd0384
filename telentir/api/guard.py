"""The data-plane guard (the hosted service's `objectAuth`) and the blueprint that applies it."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from flask import Blueprint, request

from ..services import roots
from ..storage.rows import UserRow
from .common import runtime, verified_user


def data_plane_user() -> UserRow:
    """The verified caller, whose root exists from here on."""
    user = verified_user()
    roots.ensure_root(runtime(), user["id"])
    return user


# Requests that add data: refused early (507) when free space is below TELENTIR_MIN_FREE_BYTES.
_GROWING_METHODS = frozenset({"POST", "PUT", "PATCH"})


def guard() -> None:
    """`before_request` hook of every data-plane blueprint: 401/403 before anything else, then 507 on a full disk.

    Only writes that add data are refused for want of space: reads and deletes go on, so an
    operator (or a user) can make room.
    """
    data_plane_user()
    if request.method in _GROWING_METHODS:
        runtime().space.check_writable()


class DataPlaneBlueprint(Blueprint):
    """A blueprint under /api whose requests pass the guard first and whose routes match paths as sent."""

    def __init__(self, name: str, import_name: str) -> None:
        super().__init__(name, import_name, url_prefix="/api")
        self.before_request(guard)

    def add_url_rule(
        self,
        rule: str,
        endpoint: str | None = None,
        view_func: Callable[..., Any] | None = None,
        provide_automatic_options: bool | None = None,
        **options: Any,
    ) -> None:
        """Register a route that never redirects: `//` (an id such as `../`) is a JSON 404, not an HTML 308."""
        options.setdefault("merge_slashes", False)
        super().add_url_rule(rule, endpoint, view_func, provide_automatic_options, **options)
