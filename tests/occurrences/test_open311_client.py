"""An Open311 client library nobody here wrote (georeport, on PyPI) against `cidade serve` on
loopback, on both stores: it reads the services, a definition and the requests an app posted,
in JSON and in XML."""

from __future__ import annotations

import httpx
import pytest
from georeport import GeoReport

from tests.auth.helpers import provision_admin
from tests.test_server import free_port, start, stop

pytestmark = pytest.mark.server


def test_georeport_reads_what_cidade_serves(store_url: str) -> None:
    key = provision_admin(store_url)
    port = free_port()
    proc = start(store_url, port, CIDADE_AUTH="true")
    try:
        root = f"http://127.0.0.1:{port}/open311/v2"
        posted = httpx.post(
            f"{root}/requests.json",
            data={
                "api_key": key,
                "service_code": "pothole",
                "lat": "41.1496",
                "long": "-8.6109",
                "description": "A deep hole",
                "attribute[size]": "large",
                "email": "reporter@example.org",
            },
        )
        assert posted.status_code == 200, posted.text
        number = posted.json()[0]["service_request_id"]
        for fmt in ("json", "xml"):
            client = GeoReport(root, output_format=fmt)
            services = client.get_service_list()
            pothole = next(s for s in services if s["service_code"] == "pothole")
            assert pothole["service_name"] == "Pothole"
            assert str(pothole["metadata"]).lower() == "true"
            definition = client.get_service_definition("pothole")
            attributes = definition["attributes"]
            size = attributes[0] if fmt == "json" else attributes["attribute"]
            assert size["code"] == "size" and size["datatype"] == "singlevaluelist"
            one = client.get_service_request(number)
            assert one["service_request_id"] == number and one["status"] == "open"
            assert str(one["lat"]) == "41.1496" and one["service_code"] == "pothole"
            found = client.get_service_requests(service_code="pothole", status="open")
            found = found if isinstance(found, list) else [found]  # XML: one is no list
            assert [r["service_request_id"] for r in found] == [number]
            assert "reporter@example.org" not in str(found)
    finally:
        stop(proc)
