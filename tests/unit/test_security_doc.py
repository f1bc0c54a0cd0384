"""docs/security.md lists every abuse limit the code counts in `telentir_limit_refusals_total{limit}`.

The labels are read from the code (the calls that count a refusal, the rate limits, the
per-user ceilings), so a limit added later without its line in docs/security.md fails here.
A label that is a setting (its name in lower case without `TELENTIR_`) must appear there as
that setting; any other label as itself.
"""

from __future__ import annotations

import ast
import re

from telentir.config import load_config

from ..support import ROOT

PACKAGE = ROOT / "telentir"
LABEL = re.compile(r"[a-z]+(?:_[a-z]+)+")
# Calls whose string arguments are `limit` labels, and constants that hold one.
COUNTING_CALLS = {"limit_refused", "on_refused", "Limit", "_at_ceiling"}
LABEL_CONSTANTS = {"LIMIT_NAME", "HEADER_TIMEOUT_LIMIT"}


def _name(node: ast.expr) -> str:
    return node.attr if isinstance(node, ast.Attribute) else node.id if isinstance(node, ast.Name) else ""


def counted_labels() -> set[str]:
    labels: set[str] = set()
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            values: list[ast.expr] = []
            if isinstance(node, ast.Call) and _name(node.func) in COUNTING_CALLS:
                values = [*node.args, *(keyword.value for keyword in node.keywords)]
            elif isinstance(node, ast.Assign) and any(_name(target) in LABEL_CONSTANTS for target in node.targets):
                values = [node.value]
            labels |= {
                value.value
                for value in values
                if isinstance(value, ast.Constant) and isinstance(value.value, str) and LABEL.fullmatch(value.value)
            }
    return labels


def test_the_labels_are_found() -> None:
    labels = counted_labels()
    assert {"sms_per_phone_per_hour", "auth_max_attempts", "connect_path", "websocket_message_bytes"} <= labels
    assert "header_timeout_seconds" in labels and "quota_bytes_per_user" in labels


def test_every_counted_limit_is_in_docs_security_md() -> None:
    text = (ROOT / "docs" / "security.md").read_text()
    settings = set(vars(load_config(environ={})))
    missing = [
        label
        for label in sorted(counted_labels())
        if not re.search(rf"\bTELENTIR_{label.upper()}\b" if label in settings else rf"`{label}`", text)
    ]
    assert not missing, f"docs/security.md does not name these limits: {missing}"
