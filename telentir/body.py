"""A request body is all there, or the request is refused: `wsgi.input` held to its Content-Length.

gunicorn hands the app a body that simply ends early when the client half-closes or
disconnects before sending Content-Length bytes; werkzeug then reads the shorter body as if
it were whole (gunicorn says the stream is terminated, so werkzeug adds no check). A JSON
body cut short can still parse (`{"server":"default"}` under `Content-Length: 50`) and the
request would go through, a key made for a client that had given up. `CompleteBodies` wraps
the input of every request with a Content-Length: a read that meets the end before that
many bytes raises BadRequest (400 `invalid_request`), before anything is written. A chunked
body's early end is gunicorn's to find (its parser raises, answered 400 the same way).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any

from .errors import BadRequest

StartResponse = Callable[..., Any]
WSGIApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]


class BodyCutShort(BadRequest):
    """The body ended (the client half-closed or left) before its Content-Length."""


class LengthCheckedInput:
    """A body stream of known length whose early end is an error, not a shorter body."""

    def __init__(self, stream: Any, length: int) -> None:
        self._stream = stream
        self.length = length
        self.left = length  # bytes of the body not read yet

    def read(self, size: int | None = -1) -> bytes:
        """Up to `size` bytes (all that is left if None or negative); BodyCutShort if the body ends first."""
        want = self.left if size is None or size < 0 else min(size, self.left)
        parts = []
        got = 0
        while got < want:
            data = self._call(self._stream.read, want - got)
            if not data:
                break
            parts.append(data)
            got += len(data)
        return self._took(b"".join(parts), complete=got >= want)

    def readline(self, size: int | None = -1) -> bytes:
        """One line (or up to `size` bytes of it); BodyCutShort if the body ends inside it."""
        want = self.left if size is None or size < 0 else min(size, self.left)
        if want == 0:
            return b""
        line = self._call(self._stream.readline, want)
        return self._took(line, complete=len(line) >= want or line.endswith(b"\n"))

    def readlines(self, hint: int | None = -1) -> list[bytes]:
        """The lines left (all of them: the hint is only a hint)."""
        return list(self)

    def __iter__(self) -> Iterator[bytes]:
        while line := self.readline():
            yield line

    def _took(self, data: bytes, complete: bool) -> bytes:
        self.left -= len(data)
        if not complete:
            raise BodyCutShort(
                f"The request body ended after {self.length - self.left} of its {self.length} bytes (Content-Length)."
            )
        return data

    def _call(self, read: Callable[[int], bytes], size: int) -> bytes:
        try:
            return read(size)
        except OSError as exc:  # a reset or a dead connection: the body will never be complete
            raise BodyCutShort(f"The connection failed while the request body was being read: {exc}.") from exc


class CompleteBodies:
    """WSGI middleware: every request with a Content-Length reads its body through a LengthCheckedInput."""

    def __init__(self, app: WSGIApp) -> None:
        self.app = app

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        """Serve one request, its input checked."""
        length = _content_length(environ)
        if length:
            environ["wsgi.input"] = LengthCheckedInput(environ["wsgi.input"], length)
        return self.app(environ, start_response)


def _content_length(environ: dict[str, Any]) -> int:
    """The request's Content-Length, 0 when absent (or not a number: the server refused those already)."""
    text = str(environ.get("CONTENT_LENGTH") or "").strip()
    return int(text) if text.isdigit() else 0
