"""Bearer tokens from the city's identity provider through the HTTP API: the provider's keys
served on loopback, the whole app in front (gate, tenants, audit)."""

from __future__ import annotations

import base64
import json
import time

from starlette.testclient import TestClient

from cidade.app import build_app
from tests.auth.helpers import account_with_key, bearer
from tests.auth.test_oidc import RSA_FORGER, claims, idp, rs256  # noqa: F401 (fixture)
from tests.conftest import NGSI, make_settings, problem_type
from tests.hub.helpers import entity


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def app_for(idp, tmp_path):  # noqa: F811
    settings = make_settings(
        store=f"sqlite:///{tmp_path}/o.db",
        oidc_issuer=idp.issuer,
        oidc_audience="cidade",
        oidc_jwks_url=idp.jwks_url,
        oidc_roles_claim="realm_access.roles",
        oidc_role_map="city-operator=operator,city-admin=admin",
    )
    return build_app(settings)


def test_a_providers_token_is_a_principal_like_any_other(idp, tmp_path):  # noqa: F811
    with TestClient(app_for(idp, tmp_path), raise_server_exceptions=False) as client:
        token = rs256(
            claims(idp, realm_access={"roles": ["city-operator"]}, tenants=["lisboa"], roles=None)
        )
        created = client.post(
            f"{NGSI}/entities",
            json=entity("urn:ngsi-ld:Building:b1"),
            headers=bearer(token, "lisboa"),
        )
        assert created.status_code == 201, created.text
        me = client.get("/auth/me", headers=bearer(token)).json()
        assert me["subject"].startswith("oidc:") and me["roles"] == ["operator"]
        # Its tenant only.
        elsewhere = client.get(f"{NGSI}/types", headers=bearer(token, "porto"))
        assert elsewhere.status_code == 403
        # Provider roles outside the map give nothing.
        nobody = rs256(claims(idp, realm_access={"roles": ["admin"]}, tenants=["lisboa"]))
        assert client.get(f"{NGSI}/types", headers=bearer(nobody, "lisboa")).status_code == 403


def test_bad_tokens_are_refused_and_audited(idp, tmp_path):  # noqa: F811
    app = app_for(idp, tmp_path)
    with TestClient(app, raise_server_exceptions=False) as client:
        admin = client.portal.call(account_with_key, app, "root", ["admin"], ["*"])
        roles = {"realm_access": {"roles": ["city-admin"]}}
        now = int(time.time())
        header = b64(json.dumps({"alg": "none", "typ": "JWT"}).encode())
        payload = b64(json.dumps(claims(idp, **roles)).encode())
        bad = {
            "expired": rs256(claims(idp, exp=now - 3600, iat=now - 7200, **roles)),
            "wrong audience": rs256(claims(idp, aud="another-app", **roles)),
            "bad signature": rs256(claims(idp, **roles), key=RSA_FORGER),
            "alg none": f"{header}.{payload}.",
        }
        for why, token in bad.items():
            response = client.get(f"{NGSI}/types", headers=bearer(token))
            assert response.status_code == 401, why
            assert problem_type(response) == "Unauthenticated"
        assert (
            client.get(f"{NGSI}/types", headers=bearer(rs256(claims(idp, **roles)))).status_code
            == 200
        )
        failed = client.get("/auth/audit?event=auth.failed", headers=bearer(admin)).json()
        assert len(failed) == 4
        assert all(e["detail"]["reason"].startswith("token rejected") for e in failed)
        everything = json.dumps(client.get("/auth/audit", headers=bearer(admin)).json())
        assert all(token not in everything for token in bad.values())
