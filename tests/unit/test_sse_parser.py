"""SSEParser: the event-stream rules of the HTML standard, fed in arbitrary chunks."""

from __future__ import annotations

import pytest

from telentir.scraper import Frame, FrameTooLarge, SSEParser


def parse(*chunks: bytes, limit: int = 1 << 20) -> list[Frame]:
    """Feed the chunks in order to one parser; every frame completed."""
    parser = SSEParser(limit)
    return [frame for chunk in chunks for frame in parser.feed(chunk)]


def every_split(stream: bytes) -> list[list[bytes]]:
    """The stream cut in two at every position, and fed one byte at a time."""
    return [[stream[:i], stream[i:]] for i in range(1, len(stream))] + [[bytes([b]) for b in stream]]


def test_one_frame():
    assert parse(b'data: {"a": 1}\n\n') == [Frame("message", '{"a": 1}')]


def test_multi_line_data_joins_with_newline():
    assert parse(b"data: first\ndata: second\ndata:\ndata: fourth\n\n") == [Frame("message", "first\nsecond\n\nfourth")]


@pytest.mark.parametrize("eol", [b"\n", b"\r\n", b"\r"], ids=["LF", "CRLF", "CR"])
def test_line_endings(eol):
    stream = b"data: a" + eol + b"data: b" + eol + eol + b"event: x" + eol + b"data: c" + eol + eol
    assert parse(stream) == [Frame("message", "a\nb"), Frame("x", "c")]


def test_mixed_line_endings():
    frames = parse(b"data: a\r\ndata: b\rdata: c\n\r\ndata: d\r\r")
    assert frames == [Frame("message", "a\nb\nc"), Frame("message", "d")]


@pytest.mark.parametrize("chunks", every_split(b"data: a\r\ndata: b\r\n\r\nevent: e\rdata: c\r\r\n"))
def test_any_chunking_gives_the_same_frames(chunks):
    # Includes every place a \r\n can be cut between two chunks: the \n then ends nothing.
    assert parse(*chunks) == [Frame("message", "a\nb"), Frame("e", "c")]


def test_crlf_split_across_chunks_is_one_line_end():
    # Were the \n counted again, "data: a" would be followed by a blank line and dispatched alone.
    assert parse(b"data: a\r", b"\ndata: b\r", b"\n\r", b"\n") == [Frame("message", "a\nb")]


def test_cr_then_lf_in_later_chunk_after_blank_line():
    assert parse(b"data: a\r\r", b"\ndata: b\n\n") == [Frame("message", "a"), Frame("message", "b")]


def test_comments_and_unknown_fields_are_ignored():
    stream = b": hello\n:\ndata: x\n: between\nfoo: bar\nretry: 10\ndata: y\n\n"
    assert parse(stream) == [Frame("message", "x\ny")]


def test_comment_only_blocks_are_not_frames():
    assert parse(b": keep-alive\n\n: again\n\n\n\n") == []


def test_event_field_names_the_frame_and_resets_after_it():
    frames = parse(b"event: error\ndata: boom\n\ndata: ok\n\nevent: progress\nevent: final\ndata: 1\n\n")
    assert [(f.event, f.data) for f in frames] == [("error", "boom"), ("message", "ok"), ("final", "1")]


def test_event_without_data_is_not_dispatched_and_does_not_leak():
    assert parse(b"event: error\n\ndata: x\n\n") == [Frame("message", "x")]


def test_field_value_spacing():
    frames = parse(b"data:no-space\n\ndata:  two spaces\n\ndata\n\n")
    assert [f.data for f in frames] == ["no-space", " two spaces", ""]


def test_id_is_kept_until_changed_and_null_ids_are_ignored():
    frames = parse(b"id: 1\ndata: a\n\ndata: b\n\nid: 2\x003\ndata: c\n\nid\ndata: d\n\n")
    assert [(f.id, f.data) for f in frames] == [("1", "a"), ("1", "b"), ("1", "c"), ("", "d")]


def test_unfinished_frame_at_end_of_stream_is_not_dispatched():
    assert parse(b"data: a\n\ndata: half") == [Frame("message", "a")]
    assert parse(b"data: a\n\ndata: whole line\n") == [Frame("message", "a")]


def test_utf8_split_across_chunks():
    data = 'data: {"name": "Zoë 日本"}\n\n'.encode()
    cut = data.index("日".encode()) + 1
    assert parse(data[:cut], data[cut:]) == [Frame("message", '{"name": "Zoë 日本"}')]


def test_leading_byte_order_mark_is_dropped():
    assert parse(b"\xef\xbb\xbf", b"data: a\n\n") == [Frame("message", "a")]
    assert parse(b"\xef\xbb\xbfdata: a\n\n") == [Frame("message", "a")]


def test_only_the_first_byte_order_mark_is_dropped():
    assert parse(b"data: a\n\n\xef\xbb\xbfdata: b\n\n") == [Frame("message", "a")]  # a field named "\ufeffdata"


# --- the frame size limit ----------------------------------------------------------------------------


def test_frame_at_the_limit_passes():
    line = b"data: " + b"x" * 94  # 100 bytes
    assert parse(line + b"\n\n", limit=100) == [Frame("message", "x" * 94)]


def test_one_long_line_is_refused_even_before_it_ends():
    parser = SSEParser(100)
    with pytest.raises(FrameTooLarge):
        list(parser.feed(b"data: " + b"x" * 200))


def test_many_lines_adding_up_past_the_limit_are_refused():
    with pytest.raises(FrameTooLarge):
        parse(*[b"data: " + b"x" * 20 + b"\n" for _ in range(10)], limit=100)


def test_the_limit_is_per_frame_not_per_stream():
    frame = b"data: " + b"x" * 50 + b"\n\n"
    assert len(parse(frame * 50, limit=100)) == 50


def test_the_limit_counts_bytes_not_characters():
    line = b"data: " + "日".encode() * 40  # 40 characters, 126 bytes
    with pytest.raises(FrameTooLarge):
        parse(line + b"\n", b"\n", limit=100)
