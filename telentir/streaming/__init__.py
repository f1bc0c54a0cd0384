"""Event streams: Server-Sent Events and the WebSocket mirror (docs/protocol.md §6).

- `feed`: one stream's life — subscribe, replay from the event table, then follow live.
- `reads`: table reads shared by the streams of a process (`RecentReads`).
- `slots`: caps on open streams, per process and per user (`StreamSlots`).
- `hub`: under gunicorn's gthread worker, one broker subscription and one writer thread
  serve every live SSE stream of the process (`SSEHub`).
- `frames`: the bytes on the wire (SSE frames, WebSocket messages), pinned by tests.
- `sockets`: the client's socket — has it hung up, and which worker model runs us.

The HTTP routes are in `telentir.api.events`; the event log itself (append, prune) in
`telentir.services.events`.
"""
