"""Who may register: TELENTIR_SIGNUP = closed (the default) | invite | open (docs/protocol.md §8).

Each mode against a real server; invites are minted, listed and revoked with the real CLI
over the server's data folder while it runs.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import requests
from click.testing import CliRunner, Result

from telentir import cli
from telentir.runtime import Runtime

from ..backends import env_for
from ..support import FIXED_MASTER_KEY, ServerProcess, assert_error, runtime_over

PASSWORD = "correct horse battery"


def signup_body(**extra: Any) -> dict[str, Any]:
    """A valid registration body with a fresh email (plus `extra`)."""
    return {
        "firstName": "Ada",
        "lastName": "Lovelace",
        "email": f"signup-{uuid.uuid4().hex[:12]}@example.com",
        "phone": "+15555550123",
        "password": PASSWORD,
        "confirmPassword": PASSWORD,
        **extra,
    }


def register(server: ServerProcess, body: dict[str, Any]) -> requests.Response:
    """POST /api/auth/register."""
    return requests.post(server.url + "/api/auth/register", json=body, timeout=30)


class Folder:
    """The server's data folder, seen from the test: the CLI and the rows."""

    def __init__(self, server: ServerProcess) -> None:
        self.server = server
        self.rt: Runtime = runtime_over(server.data_dir)

    def cli(self, *args: str) -> Result:
        """Run an admin command over the folder."""
        env = {
            "TELENTIR_DATA_DIR": str(self.server.data_dir),
            "TELENTIR_MASTER_KEY": FIXED_MASTER_KEY,
            **env_for(self.server.data_dir),  # the session's storage backend
        }
        return CliRunner().invoke(cli.main, list(args), env=env, catch_exceptions=False)

    def mint(self, *args: str) -> tuple[str, str]:
        """`telentir invites create ARGS`: (invite id, code)."""
        result = self.cli("invites", "create", *args)
        assert result.exit_code == 0, result.output
        first, code = result.output.strip().splitlines()
        return first.split()[2], code

    def invite(self, invite_id: str) -> dict[str, str]:
        """The invite's line of `telentir invites list`, by column."""
        result = self.cli("invites", "list")
        assert result.exit_code == 0, result.output
        for line in result.output.splitlines():
            fields = line.split("\t")
            if fields[0] == invite_id:
                return dict(zip(["id", "state", "plan", "expires", "used_by", "note"], fields, strict=True))
        raise AssertionError(f"{invite_id} not listed:\n{result.output}")

    def plan_of(self, email: str) -> str | None:
        """The plan of the account with this email (None: no such account)."""
        plan = self.rt.db.query_value("SELECT MAX(plan) FROM users WHERE email = ?", (email,))
        return None if plan is None else str(plan)

    def has(self, email: str) -> bool:
        """Whether an account with this email exists."""
        return self.rt.db.query_one("SELECT 1 FROM users WHERE email = ?", (email,)) is not None

    def close(self) -> None:
        self.rt.close()


# Every sign-up here comes from one address; the limit of sign-ups per address has tests of its own.
NO_SIGNUP_LIMIT = {"TELENTIR_SIGNUPS_PER_ADDRESS_PER_HOUR": "1000"}


def _server(tmp_path_factory: pytest.TempPathFactory, name: str, **env: str) -> Iterator[tuple[ServerProcess, Folder]]:
    settings = {"TELENTIR_MASTER_KEY": FIXED_MASTER_KEY, **NO_SIGNUP_LIMIT, **env}
    srv = ServerProcess(tmp_path_factory.mktemp(name) / "data", settings)
    srv.start()
    folder = Folder(srv)
    yield srv, folder
    folder.close()
    srv.discard()


@pytest.fixture(scope="module")
def closed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerProcess, Folder]]:
    """A server with no TELENTIR_SIGNUP: the default."""
    yield from _server(tmp_path_factory, "signup-default")


@pytest.fixture(scope="module")
def invite_only(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerProcess, Folder]]:
    """A server with TELENTIR_SIGNUP=invite, whose default plan is `growth`."""
    yield from _server(tmp_path_factory, "signup-invite", TELENTIR_SIGNUP="invite", TELENTIR_DEFAULT_PLAN="growth")


@pytest.fixture(scope="module")
def open_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerProcess, Folder]]:
    """A server with TELENTIR_SIGNUP=open."""
    yield from _server(tmp_path_factory, "signup-open", TELENTIR_SIGNUP="open")


# --- closed (the default) ---------------------------------------------------------------------


def test_sign_up_is_closed_by_default(closed: tuple[ServerProcess, Folder]) -> None:
    server, folder = closed
    body = signup_body()
    error = assert_error(register(server, body), 403, "signup_closed")
    assert "telentir users create" in error["message"]
    assert not folder.has(body["email"])


def test_a_closed_server_refuses_before_reading_the_body(closed: tuple[ServerProcess, Folder]) -> None:
    server, _ = closed
    resp = requests.post(
        server.url + "/api/auth/register", data="{not json", headers={"Content-Type": "application/json"}, timeout=30
    )
    assert_error(resp, 403, "signup_closed")
    assert_error(register(server, signup_body(invite="tli_whatever")), 403, "signup_closed")


def test_a_closed_server_still_has_accounts_from_the_cli(closed: tuple[ServerProcess, Folder]) -> None:
    server, folder = closed
    email = f"cli-{uuid.uuid4().hex[:8]}@example.com"
    made = folder.cli("users", "create", email, "--phone", "+15555550100", "--password", PASSWORD, "--plan", "growth")
    assert made.exit_code == 0, made.output
    login = requests.post(server.url + "/api/auth/login", json={"email": email, "password": PASSWORD}, timeout=30)
    assert login.status_code == 200, login.text
    assert folder.plan_of(email) == "growth"


# --- open -------------------------------------------------------------------------------------


def test_an_open_server_lets_anyone_register_on_the_default_plan(open_server: tuple[ServerProcess, Folder]) -> None:
    server, folder = open_server
    body = signup_body(invite="ignored-when-open")
    resp = register(server, body)
    assert resp.status_code == 201, resp.text
    assert resp.json()["status"] == "phone_not_verified"
    assert folder.plan_of(body["email"]) == "starter"


# --- invite -----------------------------------------------------------------------------------


def test_invite_mode_needs_a_code(invite_only: tuple[ServerProcess, Folder]) -> None:
    server, folder = invite_only
    for body in (signup_body(), signup_body(invite=""), signup_body(invite=None), signup_body(invite=42)):
        error = assert_error(register(server, body), 403, "invite_required")
        assert "invite" in error["message"]
        assert not folder.has(body["email"])


@pytest.mark.parametrize("code", ["tli_no-such-code", "x" * 5000, "tli_\u00e9\u00e9"])
def test_an_unknown_code_is_refused(invite_only: tuple[ServerProcess, Folder], code: str) -> None:
    server, folder = invite_only
    body = signup_body(invite=code)
    assert_error(register(server, body), 403, "invite_invalid")
    assert not folder.has(body["email"])


def test_a_code_makes_one_account_on_its_plan_and_is_used_up(invite_only: tuple[ServerProcess, Folder]) -> None:
    server, folder = invite_only
    invite_id, code = folder.mint("--plan", "pro", "--note", "for Ada")
    assert folder.invite(invite_id)["state"] == "unused"
    body = signup_body(invite=code)
    resp = register(server, body)
    assert resp.status_code == 201, resp.text
    assert folder.plan_of(body["email"]) == "pro"
    listed = folder.invite(invite_id)
    user_id = folder.rt.db.query_value("SELECT id FROM users WHERE email = ?", (body["email"],))
    assert (listed["state"], listed["plan"], listed["used_by"], listed["note"]) == ("used", "pro", user_id, "for Ada")
    again = signup_body(invite=code)
    assert_error(register(server, again), 403, "invite_invalid")
    assert not folder.has(again["email"])


def test_a_code_without_a_plan_gives_the_default_plan(invite_only: tuple[ServerProcess, Folder]) -> None:
    server, folder = invite_only
    _, code = folder.mint()
    body = signup_body(invite=code)
    assert register(server, body).status_code == 201
    assert folder.plan_of(body["email"]) == "growth"


def test_a_refused_registration_leaves_the_code_unused(invite_only: tuple[ServerProcess, Folder]) -> None:
    server, folder = invite_only
    invite_id, code = folder.mint()
    taken = signup_body(invite=folder.mint()[1])
    assert register(server, taken).status_code == 201
    assert_error(register(server, {**signup_body(invite=code), "email": "not-an-email"}), 400)
    assert_error(register(server, {**signup_body(invite=code), "confirmPassword": "different!"}), 400)
    assert_error(register(server, {**signup_body(invite=code), "email": taken["email"]}), 409, "email_taken")
    assert folder.invite(invite_id)["state"] == "unused"
    assert register(server, signup_body(invite=code)).status_code == 201


def test_two_registrations_racing_with_one_code_make_one_account(invite_only: tuple[ServerProcess, Folder]) -> None:
    server, folder = invite_only
    _, code = folder.mint()
    bodies = [signup_body(invite=code) for _ in range(6)]
    answers: list[requests.Response] = []
    gate = threading.Barrier(len(bodies))

    def attempt(body: dict[str, Any]) -> None:
        gate.wait()
        answers.append(register(server, body))

    threads = [threading.Thread(target=attempt, args=(body,)) for body in bodies]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert sorted(resp.status_code for resp in answers) == [201] + [403] * 5, [r.text for r in answers]
    assert sum(folder.has(body["email"]) for body in bodies) == 1


def test_a_revoked_or_expired_code_is_refused(invite_only: tuple[ServerProcess, Folder]) -> None:
    server, folder = invite_only
    revoked_id, revoked = folder.mint()
    done = folder.cli("invites", "revoke", revoked_id)
    assert done.exit_code == 0 and f"Revoked {revoked_id}" in done.output, done.output
    assert folder.invite(revoked_id)["state"] == "revoked"
    assert_error(register(server, signup_body(invite=revoked)), 403, "invite_invalid")
    expiring_id, expiring = folder.mint("--expires-in", "1s")
    _wait_for(lambda: folder.invite(expiring_id)["state"] == "expired", timeout=5)
    assert_error(register(server, signup_body(invite=expiring)), 403, "invite_invalid")
    lasting_id, lasting = folder.mint("--expires-in", "7d")
    assert folder.invite(lasting_id)["expires"] > folder.invite(expiring_id)["expires"]
    assert register(server, signup_body(invite=lasting)).status_code == 201


def _wait_for(condition: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.1)


@pytest.mark.parametrize(
    "args, message",
    [
        (["invites", "create", "--plan", "platinum"], "Unknown plan 'platinum'"),
        (["invites", "create", "--expires-in", "5x"], "is not a duration"),
        (["invites", "create", "--expires-in", "0d"], "is not a duration"),
        (["invites", "revoke", "inv_nope"], "No invite 'inv_nope'"),
    ],
)
def test_invite_commands_refuse_bad_input(
    invite_only: tuple[ServerProcess, Folder], args: list[str], message: str
) -> None:
    _, folder = invite_only
    result = folder.cli(*args)
    assert result.exit_code != 0 and message in result.output, result.output


def test_a_used_code_cannot_be_revoked(invite_only: tuple[ServerProcess, Folder]) -> None:
    server, folder = invite_only
    invite_id, code = folder.mint()
    assert register(server, signup_body(invite=code)).status_code == 201
    result = folder.cli("invites", "revoke", invite_id)
    assert result.exit_code == 1 and "No unused invite" in result.output, result.output
    assert folder.invite(invite_id)["state"] == "used"


def test_codes_are_stored_only_as_hashes(invite_only: tuple[ServerProcess, Folder]) -> None:
    _, folder = invite_only
    invite_id, code = folder.mint()
    row = dict(folder.rt.db.query_one("SELECT * FROM invites WHERE id = ?", (invite_id,)))
    assert code not in repr(row) and code.removeprefix("tli_") not in repr(row)
