"""Streaming client for the scraper service: POST params, read Server-Sent Events.

The parser follows the HTML living standard's event-stream rules: lines end in `\\r\\n`,
`\\n` or `\\r`; `data:` lines of one frame join with `\\n`; lines starting with `:` are
comments; a blank line ends a frame; a leading byte order mark is dropped. Frames larger
than a limit (in bytes) end the stream.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import requests

from .errors import BadRequest
from .wire import MAX_PATH_CHARS, is_plain_path

_LINE_END = re.compile(rb"\r\n|\r|\n")
_BOM = b"\xef\xbb\xbf"


class FrameTooLarge(ValueError):
    """A frame exceeded the size limit."""


class JobTimeout(TimeoutError):
    """The job ran past its maximum duration."""


@dataclass(frozen=True)
class Frame:
    """One Server-Sent Event."""

    event: str
    data: str
    id: str | None = None


class SSEParser:
    """Incremental event-stream parser: feed bytes, get complete frames."""

    def __init__(self, max_frame_bytes: int) -> None:
        self.max_frame_bytes = max_frame_bytes
        self._buffer = b""
        self._at_start = True
        self._pending_cr = False
        self._data: list[str] = []
        self._event = ""
        self._id: str | None = None
        self._size = 0

    def feed(self, chunk: bytes) -> Iterator[Frame]:
        """Consume a chunk; yield every frame it completes."""
        if self._pending_cr and chunk.startswith(b"\n"):
            chunk = chunk[1:]  # the \n of a \r\n split across chunks
        self._pending_cr = False
        self._buffer += chunk
        if self._at_start:
            if _BOM.startswith(self._buffer):
                return  # maybe a byte order mark cut across chunks: wait for more
            self._at_start = False
            self._buffer = self._buffer.removeprefix(_BOM)
        *lines, self._buffer = _LINE_END.split(self._buffer)
        if self._buffer == b"" and chunk.endswith(b"\r"):
            self._pending_cr = True
        if len(self._buffer) > self.max_frame_bytes:
            raise FrameTooLarge("a line of the event stream is larger than the frame limit")
        for line in lines:
            frame = self._line(line)
            if frame is not None:
                yield frame

    def _line(self, raw: bytes) -> Frame | None:
        if raw == b"":
            return self._dispatch()
        self._size += len(raw)
        if self._size > self.max_frame_bytes:
            raise FrameTooLarge("an event-stream frame is larger than the frame limit")
        line = raw.decode("utf-8", errors="replace")
        if line.startswith(":"):
            return None
        name, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if name == "data":
            self._data.append(value)
        elif name == "event":
            self._event = value
        elif name == "id" and "\x00" not in value:
            self._id = value
        return None

    def _dispatch(self) -> Frame | None:
        frame = Frame(self._event or "message", "\n".join(self._data), self._id) if self._data else None
        self._data, self._event, self._size = [], "", 0
        return frame


def check_path(path: Any) -> str:
    """`path` if it is a plain path on the scraper host (see `is_plain_path`); 400 otherwise."""
    if not is_plain_path(path):
        raise BadRequest(
            "path must be a plain path on the scraper service, like /get-leads: segments of letters, digits, "
            f"'-' and '_' joined by single '/', at most {MAX_PATH_CHARS} characters."
        )
    assert isinstance(path, str)
    return path


def scraper_url(base: str, path: str) -> str:
    """Join the configured scraper base URL and a checked path, refusing anything that leaves the host."""
    url = base.rstrip("/") + check_path(path)
    if urlsplit(url).netloc != urlsplit(base).netloc:
        raise BadRequest("path must stay on the scraper service.")
    return url


def stream_frames(
    url: str,
    params: dict[str, Any],
    *,
    connect_timeout: float,
    read_timeout: float,
    max_frame_bytes: int,
    deadline: float,
    session: requests.Session,
) -> Iterator[Frame]:
    """POST `params` and yield frames until the stream ends; raises on HTTP errors and timeouts."""
    with session.post(
        url,
        data=json.dumps(params),
        stream=True,
        allow_redirects=False,
        timeout=(connect_timeout, read_timeout),
        headers={"Accept": "text/event-stream", "Content-Type": "application/json"},
    ) as response:
        if response.status_code != 200:
            raise requests.HTTPError(f"scraper answered {response.status_code}", response=response)
        parser = SSEParser(max_frame_bytes)
        while True:
            # read1 returns whatever has arrived (up to 64 KiB): frames are handled as they come,
            # whether the scraper streams chunked or close-delimited.
            chunk = response.raw.read1(65536)
            if not chunk:
                return
            if time.monotonic() > deadline:
                raise JobTimeout("the job ran past its maximum duration")
            yield from parser.feed(chunk)
