"""`python -m telentir_client` (or `telentir-client`): list, get, put, delete, watch and export from a shell.

Credentials come from `--api-key`/`--api` or `TELENTIR_API_KEY`/`TELENTIR_API`. Output is JSON:
one item per line for `list`, `watch` and `export` (NDJSON), pretty for `get`.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .client import Telentir
from .errors import TelentirError
from .events import EVENT_TYPES


def _line(value: Any) -> None:
    print(json.dumps(value, ensure_ascii=False, separators=(",", ":")), flush=True)


def _payload(args: argparse.Namespace) -> dict[str, Any]:
    text = args.data if args.data is not None else sys.stdin.read()
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise SystemExit(f"telentir-client: the item is not JSON: {exc}") from None
    if not isinstance(value, dict):
        raise SystemExit("telentir-client: the item must be a JSON object")
    return value


def _pairs(items: Sequence[str], what: str) -> dict[str, str]:
    pairs = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise SystemExit(f"telentir-client: {what} is NAME=VALUE, not {item!r}")
        pairs[name] = value
    return pairs


def run(client: Telentir, args: argparse.Namespace) -> None:
    """Carry out one command."""
    if args.command == "list":
        for item in client.store(args.store).iter(page_size=args.page_size):
            _line(item)
    elif args.command == "get":
        print(json.dumps(client.store(args.store).get(args.id), ensure_ascii=False, indent=2))
    elif args.command == "put":
        store = client.store(args.store)
        if args.id:
            store.update(args.id, _payload(args), server=args.server)
            print(args.id)
        else:
            print(store.create(_payload(args), server=args.server or "default"))
    elif args.command == "delete":
        client.store(args.store).delete(args.id)
    elif args.command == "watch":
        with client.events.listen(args.type, _pairs(args.filter, "--filter"), args.since) as stream:
            for event in stream:
                _line({"type": event.type, "event_id": event.event_id, "data": dict(event)})
    elif args.command == "export":
        for name in args.stores or list(client.root["stores"]):
            for item in client.store(name).iter(page_size=1000):
                _line({"store": client.store(name).name, "item": item})


def parser() -> argparse.ArgumentParser:
    """The command line."""
    main = argparse.ArgumentParser(prog="telentir-client", description=(__doc__ or "").split("\n")[0])
    main.add_argument("--api", help="the server's /api URL (default: $TELENTIR_API or http://127.0.0.1:8000/api)")
    main.add_argument("--api-key", help="the API key (default: $TELENTIR_API_KEY)")
    main.add_argument(
        "--private-key",
        action="append",
        default=[],
        metavar="SERVER=FILE",
        help="a BYOK server's private key (PEM file); repeatable",
    )
    commands = main.add_subparsers(dest="command", required=True)
    listing = commands.add_parser("list", help="every item of a store, decrypted, one JSON per line")
    listing.add_argument("store")
    listing.add_argument("--page-size", type=int, default=100)
    get = commands.add_parser("get", help="one item, decrypted")
    get.add_argument("store")
    get.add_argument("id")
    put = commands.add_parser("put", help="create an item (or replace item ID) from JSON on stdin or --data")
    put.add_argument("store")
    put.add_argument("id", nargs="?")
    put.add_argument("--data", help="the item as JSON (default: read stdin)")
    put.add_argument("--server", help="the server to encrypt for (default: the item's, or default)")
    delete = commands.add_parser("delete", help="delete an item")
    delete.add_argument("store")
    delete.add_argument("id")
    watch = commands.add_parser("watch", help="print events as they happen, one JSON per line (Ctrl-C ends)")
    watch.add_argument("type", choices=EVENT_TYPES)
    watch.add_argument("--filter", action="append", default=[], metavar="NAME=VALUE", help="e.g. relatedId=obj_…")
    watch.add_argument("--since", help="resume after this event id")
    export = commands.add_parser("export", help="every item of the stores (default: all), one JSON per line")
    export.add_argument("stores", nargs="*")
    return main


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: 0 on success, 1 when the server or the cryptography refused, 130 on Ctrl-C."""
    args = parser().parse_args(argv)
    try:
        keys = {name: Path(path).read_bytes() for name, path in _pairs(args.private_key, "--private-key").items()}
    except OSError as exc:
        print(f"telentir-client: --private-key: {exc}", file=sys.stderr)
        return 1
    try:
        with Telentir.connect(api_key=args.api_key, api=args.api, private_keys=keys) as client:
            run(client, args)
    except (TelentirError, ValueError) as exc:
        print(f"telentir-client: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `… | head`: the reader is gone, which is fine
        sys.stderr.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
