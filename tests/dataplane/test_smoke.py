from ..support import assert_error


def test_live_server_answers_server_document(new_live_user):
    _user, api = new_live_user()
    resp = api.get("/server")
    assert resp.status_code == 200
    body = resp.json()
    assert body["current"] == "telentir"
    assert body["keys"]["telentir"]["application/jwk+json"]["alg"] == "RS256"


def test_unverified_user_is_refused(new_live_user):
    _user, api = new_live_user(verified=False)
    assert_error(api.get("/server"), 403, "phone_not_verified")
