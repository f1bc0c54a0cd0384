"""Each route's description, declared once next to its view: what it reads, answers and may refuse.

`@operation(...)` under the route decorator records an `Operation` for the view; the OpenAPI
document (api/document.py) walks Flask's url_map and reads these. Statuses every route
shares are added by the document from `auth` and `body` (see `Operation.statuses`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Literal, TypeVar

F = TypeVar("F", bound=Callable[..., Any])
Auth = Literal["verified", "user"] | None


@dataclass(frozen=True)
class Header:
    """A header a request carries or an answer sets; `type` is a msgspec type."""

    name: str
    type: Any
    required: bool = True
    description: str = ""


@dataclass(frozen=True)
class Answer:
    """The success answer: its status, body type (None: no body), media type and headers."""

    status: int = 200
    type: Any = None
    description: str = "OK"
    media: str = "application/json"
    headers: tuple[Header, ...] = ()
    example: Any = None


@dataclass(frozen=True)
class Operation:
    """One route and method. `auth`: "verified" (401, 403), "user" (401) or None (no credential)."""

    id: str
    tag: str
    summary: str
    ok: Answer = Answer()
    errors: tuple[int, ...] = ()
    auth: Auth = "verified"
    body: Any = None
    body_required: bool = True
    body_example: Any = None
    query: Any = None  # a Struct: each field is an optional (or required) query parameter
    path: Mapping[str, Any] = field(default_factory=dict)  # path parameter -> msgspec type
    headers: tuple[Header, ...] = ()
    secret: bool = False  # the answer carries a secret: Cache-Control: no-store
    other_paths: Mapping[str, str] = field(default_factory=dict)  # another path of the view -> its operationId
    # One path per value of the path parameter `expand`, each with its query (`query_by[value]`), when
    # what a request may carry depends on that value; `id` is then a format string taking the value.
    expand: str | None = None
    query_by: Mapping[str, Any] = field(default_factory=dict)

    def variants(self, path: str) -> list[tuple[str, str, Operation]]:
        """(path, operationId, operation) of each documented path of the route at `path`."""
        if self.expand is None:
            return [(path, self.other_paths.get(path, self.id), self)]
        return [
            (
                path.replace("{" + self.expand + "}", value),
                self.id.format(value),
                replace(self, query=query, path={k: v for k, v in self.path.items() if k != self.expand}),
            )
            for value, query in self.query_by.items()
        ]

    def statuses(self) -> list[int]:
        """Every status besides the success: 400 on every route (query strings and headers must be text)."""
        statuses = {400, *self.errors}
        if self.auth is not None:
            statuses |= {401, 503}  # every credential is looked up in the database, which may be away
        if self.auth == "verified":
            statuses.add(403)
        if self.body is not None:
            statuses |= {413, 415}
        if self.auth == "verified" and self.body is not None:
            statuses.add(507)  # a data-plane write on a full disk
        return sorted(statuses)


OPERATIONS: dict[Callable[..., Any], Operation] = {}


def operation(id: str, tag: str, summary: str, **details: Any) -> Callable[[F], F]:
    """Declare the view's operation (put it under the route decorator, above any other)."""
    described = Operation(id, tag, summary, **details)

    def mark(view: F) -> F:
        OPERATIONS[view] = described
        return view

    return mark
