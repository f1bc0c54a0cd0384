"""What one user may make the server store or compute (issue 20, docs/security.md): byte quota,
API keys, servers, RSA generations, a fair share of the stream cap, and connector paths.

One real server with two workers, so every count is shown to hold across processes (and, on
the second pass, across PostgreSQL connections); each refusal moves
`telentir_limit_refusals_total{limit}`.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing
from typing import Any

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from telentir.config import ConfigError, load_config
from telentir.errors import RateLimited, ServiceUnavailable
from telentir.runtime import Runtime
from telentir.services import credits
from telentir.streaming.slots import StreamSlots

from ..connect_support import PLANS, PRICE, connect_env, credits_amount, run_connect
from ..dataplane_support import Vault, encrypt, new_rsa, spki
from ..events_support import STREAM_SETTINGS
from ..scraper_fixture import TestScraper
from ..sse_client import SSEStream, assert_refused, must_open, open_stream
from ..support import Api, ServerProcess, assert_error, make_user, running_server, runtime_over, wait_until

QUOTA = 200_000
OBJECT = 60_000  # "60 KB": three fit in the quota (with the root's eight small store objects), a fourth does not
MAX_KEYS, MAX_SERVERS, GENERATIONS = 3, 3, 2
MAX_STREAMS = 16  # the fair share (default 8 users) is 2 streams per user
METRICS_TOKEN = "limits-metrics-token-0123"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, scraper: TestScraper) -> Iterator[ServerProcess]:
    settings = connect_env(
        scraper.url,
        **STREAM_SETTINGS,
        TELENTIR_QUOTA_BYTES_PER_USER=str(QUOTA),
        TELENTIR_MAX_API_KEYS_PER_USER=str(MAX_KEYS),
        TELENTIR_MAX_SERVERS_PER_USER=str(MAX_SERVERS),
        TELENTIR_RSA_GENERATIONS_PER_HOUR=str(GENERATIONS),
        TELENTIR_SSE_MAX_STREAMS=str(MAX_STREAMS),
        TELENTIR_CONNECT_PATHS="/get-leads,/premium-leads,/Search/Companies",
        TELENTIR_BILLED_PATHS="/get-leads,/premium-leads",
        TELENTIR_METRICS_TOKEN=METRICS_TOKEN,
    )
    with running_server(tmp_path_factory, "limits", workers=2, **settings) as process:
        yield process
        scraper.stopping.set()


@pytest.fixture(scope="module")
def rt(server: ServerProcess) -> Iterator[Runtime]:
    with closing(runtime_over(server.data_dir, plans=PLANS)) as runtime:
        yield runtime


@pytest.fixture
def new_vault(rt: Runtime, server: ServerProcess) -> Iterator[Callable[[], Vault]]:
    """Factory: a new user's vault (root fetched) on the server."""
    apis: list[Api] = []

    def factory() -> Vault:
        user = make_user(rt)
        apis.append(Api(server.url, user["api_key"]))
        return Vault(apis[-1], user)

    yield factory
    for api in apis:
        api.close()


def refusals(server: ServerProcess) -> dict[str, float]:
    """`telentir_limit_refusals_total` by limit, summed over the workers."""
    resp = requests.get(server.url + "/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"}, timeout=10)
    assert resp.status_code == 200, resp.text[:300]
    found: dict[str, float] = {}
    for family in text_string_to_metric_families(resp.text):
        for sample in family.samples:
            if sample.name == "telentir_limit_refusals_total":
                found[sample.labels["limit"]] = sample.value
    return found


def moved(before: dict[str, float], server: ServerProcess, limit: str) -> float:
    return refusals(server).get(limit, 0.0) - before.get(limit, 0.0)


def object_body(vault: Vault, size: int) -> dict[str, Any]:
    key = vault.default_key()
    ciphertext, tag = encrypt(os.urandom(32), os.urandom(12), os.urandom(size - 0))
    assert len(ciphertext) == size
    return {"keyId": key, "content": ciphertext.hex(), "authTag": tag.hex(), "relatedId": vault.store()}


def stored(rt: Runtime, user_id: str) -> tuple[int, int]:
    """(the running count, the sum of the user's object sizes): equal whenever no write is under way."""
    row = rt.db.query_row(
        "SELECT stored_bytes, (SELECT COALESCE(SUM(size), 0) FROM objects WHERE user_id = ?) FROM users WHERE id = ?",
        (user_id, user_id),
    )
    return int(row[0]), int(row[1])


def usage(api: Api) -> dict[str, Any]:
    resp = api.get("/auth")
    assert resp.status_code == 200, resp.text
    return dict(resp.json()["usage"])


# --- the byte quota -----------------------------------------------------------------------------


def test_the_fourth_60kb_object_is_refused_and_deleting_makes_room(new_vault, rt, server):
    vault = new_vault()
    base = usage(vault.api)["bytes"]  # the root's store objects
    assert usage(vault.api) == {"bytes": base, "quotaBytes": QUOTA} and 0 < base < QUOTA - 3 * OBJECT
    before = refusals(server)
    made = [vault.api.post("/objects", json=object_body(vault, OBJECT)) for _ in range(3)]
    assert [r.status_code for r in made] == [201] * 3
    assert usage(vault.api)["bytes"] == base + 3 * OBJECT
    fourth = vault.api.put("/objects", json=object_body(vault, OBJECT))
    assert_error(fourth, 413, "quota_exceeded")
    assert "quota" in fourth.json()["message"]
    assert len(vault.related_ids(vault.store())) == 3  # nothing stored
    assert stored(rt, vault.user["id"]) == (base + 3 * OBJECT, base + 3 * OBJECT)
    assert moved(before, server, "quota_bytes_per_user") == 1
    assert vault.api.delete(f"/objects/{made[0].json()['id']}").status_code == 204
    assert usage(vault.api)["bytes"] == base + 2 * OBJECT
    assert vault.api.put("/objects", json=object_body(vault, OBJECT)).status_code == 201
    assert stored(rt, vault.user["id"]) == (base + 3 * OBJECT, base + 3 * OBJECT)


def test_a_patch_that_grows_past_the_quota_is_refused_and_one_that_shrinks_is_not(new_vault, rt):
    vault = new_vault()
    base = usage(vault.api)["bytes"]
    object_id = vault.api.post("/objects", json=object_body(vault, OBJECT)).json()["id"]
    grow = object_body(vault, QUOTA - base + 1)
    resp = vault.api.patch(f"/objects/{object_id}", json={"content": grow["content"], "authTag": grow["authTag"]})
    assert_error(resp, 413, "quota_exceeded")
    assert len(bytes.fromhex(vault.api.get(f"/objects/{object_id}").json()["content"])) == OBJECT  # unchanged
    fits = object_body(vault, QUOTA - base)  # exactly the quota
    resp = vault.api.patch(f"/objects/{object_id}", json={"content": fits["content"], "authTag": fits["authTag"]})
    assert resp.status_code == 200, resp.text
    assert usage(vault.api)["bytes"] == QUOTA
    small = object_body(vault, 100)
    resp = vault.api.patch(f"/objects/{object_id}", json={"content": small["content"], "authTag": small["authTag"]})
    assert resp.status_code == 200, resp.text
    assert stored(rt, vault.user["id"]) == (base + 100, base + 100)


def test_a_cascade_delete_frees_the_whole_subtree(new_vault, rt):
    vault = new_vault()
    base = usage(vault.api)["bytes"]
    parent = vault.api.post("/objects", json=object_body(vault, 1000)).json()["id"]
    child = {**object_body(vault, 2000), "relatedId": parent}
    assert vault.api.post("/objects", json=child).status_code == 201
    assert usage(vault.api)["bytes"] == base + 3000
    assert vault.api.delete(f"/objects/{parent}?cascade=true").status_code == 204
    assert stored(rt, vault.user["id"]) == (base, base)


def test_the_quota_is_exact_under_concurrent_writes_on_both_workers(new_vault, rt):
    vault = new_vault()
    bodies = [object_body(vault, OBJECT) for _ in range(8)]
    with ThreadPoolExecutor(8) as pool:
        # One connection each: the requests spread over both workers.
        statuses = list(
            pool.map(
                lambda body: (
                    requests.post(
                        f"{vault.api.base_url}/api/objects",
                        json=body,
                        headers={"Authorization": f"Bearer {vault.user['api_key']}"},
                        timeout=60,
                    ).status_code
                ),
                bodies,
            )
        )
    assert sorted(statuses) == [201] * 3 + [413] * 5
    count, summed = stored(rt, vault.user["id"])
    assert count == summed <= QUOTA and len(vault.related_ids(vault.store())) == 3


def test_another_user_is_not_touched_by_a_full_quota(new_vault):
    full, other = new_vault(), new_vault()
    for _ in range(3):
        assert full.api.post("/objects", json=object_body(full, OBJECT)).status_code == 201
    assert other.api.post("/objects", json=object_body(other, OBJECT)).status_code == 201


# --- ingestion and the quota ---------------------------------------------------------------------


def test_an_ingestion_job_stops_at_the_quota_and_charges_only_what_was_stored(new_vault, rt, server, scraper):
    vault = new_vault()
    credits.set_plan(rt, vault.user["id"], "payg")
    credits.grant_credits(rt, vault.user["id"], 1000 * PRICE)
    for _ in range(3):  # about 19 KB left: a few hundred small records
        assert vault.api.post("/objects", json=object_body(vault, OBJECT)).status_code == 201
    before = refusals(server)
    job = run_connect(vault.api, {"credits": 1000})
    written = job["created"]
    assert job["status"] == "failed" and "quota" in job["error"], job
    assert 0 < written < 1000, job
    assert job["credits"]["granted"] == 1000 and job["credits"]["used"] == written
    assert (job["credits"]["charged"], job["credits"]["refunded"]) == (written * PRICE, (1000 - written) * PRICE)
    assert job["credits"]["settlement"] == "settled"
    assert credits_amount(vault.api) == (1000 - written) * PRICE
    assert len(vault.related_ids(vault.store())) == 3 + written
    count, summed = stored(rt, vault.user["id"])
    assert count == summed <= QUOTA
    assert moved(before, server, "quota_bytes_per_user") >= 1


def test_a_job_for_a_user_at_the_quota_is_refused_before_the_scraper_is_called(new_vault, rt, scraper):
    vault = new_vault()
    credits.set_plan(rt, vault.user["id"], "payg")
    credits.grant_credits(rt, vault.user["id"], 10 * PRICE)
    base = usage(vault.api)["bytes"]
    assert vault.api.post("/objects", json=object_body(vault, QUOTA - base)).status_code == 201
    calls = scraper.request_count()
    resp = vault.api.post("/connect", json={"repository": "contacts", "path": "/get-leads", "params": {"credits": 5}})
    assert_error(resp, 413, "quota_exceeded")
    assert scraper.request_count() == calls
    assert credits_amount(vault.api) == 10 * PRICE
    assert rt.db.query_value("SELECT COUNT(*) FROM jobs WHERE user_id = ?", (vault.user["id"],)) == 0


# --- connector paths ---------------------------------------------------------------------------------

ODD_SPELLINGS = ["/get-leads;x", "/get-leads.json", "/get-leads%2F", "\\get-leads", "//get-leads", "/./get-leads"]


@pytest.mark.parametrize("path", ODD_SPELLINGS)
def test_an_odd_spelling_of_a_billed_path_is_400_and_the_scraper_hears_nothing(new_vault, rt, server, scraper, path):
    vault = new_vault()
    before, calls = refusals(server), scraper.request_count()
    resp = vault.api.post("/connect", json={"repository": "contacts", "path": path, "params": {"credits": 1_000_000}})
    assert_error(resp, 400, "invalid_request")
    assert scraper.request_count() == calls
    assert rt.db.query_value("SELECT COUNT(*) FROM jobs WHERE user_id = ?", (vault.user["id"],)) == 0
    assert moved(before, server, "connect_path") == 1


def test_a_path_off_the_allowlist_is_400(new_vault, server, scraper):
    vault = new_vault()
    before, calls = refusals(server), scraper.request_count()
    resp = vault.api.post("/connect", json={"repository": "contacts", "path": "/bulk", "params": {"count": 3}})
    assert_error(resp, 400, "invalid_request")
    assert "/Search/Companies" in resp.json()["message"]
    assert scraper.request_count() == calls
    assert moved(before, server, "connect_paths") == 1


def test_allowed_paths_are_matched_without_case_and_sent_as_configured(new_vault, rt, scraper):
    vault = new_vault()
    job = run_connect(vault.api, {"count": 4}, path="/search/COMPANIES")
    assert (job["status"], job["created"], job["path"]) == ("succeeded", 4, "/Search/Companies")
    assert job["credits"]["granted"] == job["credits"]["charged"] == 0
    assert scraper.requests[-1]["path"] == "/Search/Companies"


def test_every_billed_path_spends_credits_in_any_case(new_vault, rt, scraper):
    vault = new_vault()
    credits.set_plan(rt, vault.user["id"], "payg")
    credits.grant_credits(rt, vault.user["id"], 3 * PRICE)
    job = run_connect(vault.api, {"credits": 50, "mode": "too_many"}, path="/PREMIUM-Leads")
    assert (job["path"], job["created"], job["credits"]["granted"], job["credits"]["charged"]) == (
        "/premium-leads",
        3,
        3,
        3 * PRICE,
    )
    assert scraper.requests[-1]["path"] == "/premium-leads" and scraper.requests[-1]["params"]["credits"] == 3
    assert credits_amount(vault.api) == 0


def test_a_second_running_job_of_a_user_is_429_and_counted(new_vault, server, scraper):
    """TELENTIR_CONNECT_PER_USER (1 here): one more job while one runs is a 429, counted as `connect_per_user`."""
    vault = new_vault()
    before, calls = refusals(server), scraper.request_count()
    slow = {"count": 20, "mode": "slow", "delay_ms": 100}
    with ThreadPoolExecutor(1) as pool, closing(Api(server.url, vault.user["api_key"])) as second:
        first = pool.submit(run_connect, vault.api, slow, "/Search/Companies")
        wait_until(lambda: scraper.request_count() == calls + 1, timeout=15)
        resp = second.post("/connect", json={"repository": "contacts", "path": "/Search/Companies", "params": {}})
        assert_error(resp, 429, "rate_limited")
        assert int(resp.headers["Retry-After"]) >= 1
        assert first.result(timeout=60)["status"] == "succeeded"
    assert scraper.request_count() == calls + 1
    assert moved(before, server, "connect_per_user") == 1


def test_connector_path_settings_refuse_malformed_paths() -> None:
    for bad in ("get-leads", "/get-leads/", "/a;b", "/a,/b.json", ","):
        with pytest.raises(ConfigError, match="TELENTIR_BILLED_PATHS"):
            load_config(environ={"TELENTIR_BILLED_PATHS": bad})
    config = load_config(environ={"TELENTIR_CONNECT_PATHS": " /a , /b/c,/a"})
    assert config.connect_paths == ("/a", "/b/c") and config.billed_paths == ("/get-leads",)
    assert load_config(environ={}).connect_paths is None


# --- API keys, servers, key generations --------------------------------------------------------------


def test_live_api_keys_are_capped_and_revoking_one_makes_room(new_vault, server):
    vault = new_vault()  # make_user gave it one key
    before = refusals(server)
    made = [vault.api.put("/api-keys", json={"name": f"k{i}"}) for i in range(MAX_KEYS - 1)]
    assert [r.status_code for r in made] == [201] * (MAX_KEYS - 1)
    resp = vault.api.put("/api-keys", json={"name": "one too many"})
    assert_error(resp, 409, "too_many_api_keys")
    assert str(MAX_KEYS) in resp.json()["message"]
    assert len(vault.api.get("/api-keys").json()) == MAX_KEYS
    assert moved(before, server, "max_api_keys_per_user") == 1
    assert vault.api.delete(f"/api-keys/{made[0].json()['id']}").status_code == 204
    assert vault.api.put("/api-keys", json={"name": "again"}).status_code == 201


def test_key_generations_are_limited_per_hour_and_servers_per_user(new_vault, rt, server):
    vault, other = new_vault(), new_vault()
    before = refusals(server)
    for i in range(GENERATIONS):
        assert vault.api.post("/servers", json={"name": f"gen{i}", "mode": "generate"}).status_code == 201
    resp = vault.api.post("/servers", json={"name": "gen-more", "mode": "generate"})
    assert_error(resp, 429, "rate_limited")
    assert 3500 < int(resp.headers["Retry-After"]) <= 3601
    assert moved(before, server, "rsa_generations_per_hour") == 1
    # Someone else's generations are their own; an uploaded public key costs the server nothing.
    assert other.api.post("/servers", json={"name": "gen0", "mode": "generate"}).status_code == 201
    upload = {"name": "mine", "mode": "upload_public", "publicKey": spki(new_rsa().public_key())}
    assert vault.api.post("/servers", json=upload).status_code == 201
    resp = vault.api.post("/servers", json={**upload, "name": "one-too-many"})
    assert_error(resp, 409, "too_many_servers")
    assert moved(before, server, "max_servers_per_user") == 1
    assert len(vault.api.get("/servers").json()) == MAX_SERVERS
    counted = rt.db.query_value("SELECT COUNT(*) FROM key_generations WHERE user_id = ?", (vault.user["id"],))
    assert counted == GENERATIONS  # the refused one was not counted, nor generated


def test_a_taken_name_is_refused_before_a_key_pair_is_generated(new_vault, rt):
    vault = new_vault()
    assert vault.api.post("/servers", json={"name": "dup", "mode": "generate"}).status_code == 201
    assert_error(vault.api.post("/servers", json={"name": "dup", "mode": "generate"}), 409, "server_exists")
    assert rt.db.query_value("SELECT COUNT(*) FROM key_generations WHERE user_id = ?", (vault.user["id"],)) == 1


# --- streams: a fair share --------------------------------------------------------------------------


def test_the_fair_share_rule() -> None:
    def share(total: int, users: int) -> int:
        return load_config({"sse_max_streams": total, "sse_fair_share_users": users}).stream_fair_share

    assert share(200, 8) == 25  # the defaults
    assert share(16, 8) == 2
    assert share(3, 8) == 1  # never below one
    assert share(3, 1) == 3  # 1: the whole box, no share


def test_slots_past_the_share_only_while_half_the_box_is_free(rt) -> None:
    slots = StreamSlots(rt.db, max_total=16, max_per_user=50, fair_share=2)
    slots.host = "fair-share-test"  # slots of its own, apart from the server's on this host
    try:
        for _ in range(8):  # 8 of 16: past its share while half the box is free
            slots.acquire("greedy")
        with pytest.raises(RateLimited):
            slots.acquire("greedy")
        for n in range(4):  # four more users, their share each
            slots.acquire(f"user{n}")
            slots.acquire(f"user{n}")
            if n == 0:
                with pytest.raises(RateLimited):
                    slots.acquire("user0")  # at its share, and half the box is taken
        with pytest.raises(ServiceUnavailable):
            slots.acquire("latecomer")  # the box itself is full: it took five users
    finally:
        slots.forget_host()


def test_four_users_holding_all_they_can_leave_streams_for_everyone_else(rt, server):
    users = [make_user(rt) for _ in range(5)]
    opened: list[SSEStream] = []
    before = refusals(server)
    try:
        for user in users[:4]:
            while isinstance(stream := open_stream(server.url, "object_created", user["api_key"]), SSEStream):
                opened.append(stream)
            assert_refused(stream, 429, "rate_limited")
        assert len(opened) == MAX_STREAMS // 2 + 3 * (MAX_STREAMS // 8)  # the first half, then a share each
        opened.append(must_open(server.url, "object_created", users[4]["api_key"]))
        assert moved(before, server, "sse_max_streams_per_user") == 4
    finally:
        for stream in opened:
            stream.close()
