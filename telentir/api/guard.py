"""The data-plane guard (the hosted service's `objectAuth`) and the blueprint that applies it."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from flask import Blueprint

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
