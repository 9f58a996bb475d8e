"""/api/schema/'s JSON/YAML negotiation and /api/docs/ (Swagger UI from swagger-ui-py's assets)
against the app, in-process: statuses, media types, caching headers, and that nothing but the
fixed list of assets is served (no path of a request reaches the file system)."""

from __future__ import annotations

import asyncio
import re
from importlib import metadata
from pathlib import Path

import falcon.errors
import falcon.testing
import pytest
import yaml

from api import docs
from api.app import create_app

ROOT = Path(__file__).resolve().parents[2]
SPEC_FILE = ROOT / "schemas" / "openapi.yaml"
YAML_TYPE = "application/vnd.oai.openapi"
VERSION = metadata.version("swagger-ui-py")
ASSETS = f"/api/docs/assets/{VERSION}"


@pytest.fixture(scope="module")
def client() -> falcon.testing.TestClient:
    return falcon.testing.TestClient(create_app(lambda: None, {}, 1024))  # type: ignore[arg-type,return-value]


# -- /api/schema/ ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "accept",
    [
        None,
        "*/*",
        YAML_TYPE,
        "application/yaml",
        "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8",  # a browser
        "application/json;q=0.5, application/yaml",
        "application/json;q=0, */*",
        "text/plain",  # nothing offered matches: the default, not a 406
        "not a media type;;",  # malformed: the default
    ],
)
def test_schema_is_yaml_bytes_of_the_file_by_default(client, accept):
    result = client.simulate_get("/api/schema/", headers={"Accept": accept} if accept else {})
    assert result.status_code == 200
    assert result.headers["content-type"] == YAML_TYPE
    assert result.content == SPEC_FILE.read_bytes()
    assert result.headers["vary"] == "Accept"


@pytest.mark.parametrize(
    "accept",
    [
        "application/json",
        "application/json, */*;q=0.8",
        "application/yaml;q=0.5, application/json",
        "application/vnd.oai.openapi+json;version=3.1",
    ],
)
def test_schema_is_json_when_accept_prefers_it(client, accept):
    result = client.simulate_get("/api/schema/", headers={"Accept": accept})
    assert result.status_code == 200
    assert result.headers["content-type"] == "application/json"
    assert result.json == yaml.safe_load(SPEC_FILE.read_bytes())


def test_format_parameter_wins_over_accept(client):
    as_json = client.simulate_get("/api/schema/", params={"format": "json"}, headers={"Accept": YAML_TYPE})
    assert as_json.headers["content-type"] == "application/json"
    assert as_json.json["openapi"].startswith("3.1")
    for value in ("yaml", "xml", ""):
        as_yaml = client.simulate_get(
            "/api/schema/", query_string=f"format={value}", headers={"Accept": "application/json"}
        )
        assert as_yaml.headers["content-type"] == YAML_TYPE, value
        assert as_yaml.content == SPEC_FILE.read_bytes()


# -- /api/docs/ ------------------------------------------------------------------------------


def test_docs_page_is_html_naming_only_local_assets(client):
    result = client.simulate_get("/api/docs/")
    assert result.status_code == 200
    assert result.headers["content-type"] == "text/html; charset=utf-8"
    assert result.headers["cache-control"] == "no-cache"
    assert result.headers["x-content-type-options"] == "nosniff"
    assert result.headers["etag"]
    csp = result.headers["content-security-policy"]
    assert "default-src 'none'" in csp and "script-src 'self'" in csp and "connect-src 'self'" in csp
    links = re.findall(r'(?:src|href)="([^"]+)"', result.text)
    assert links and all(link.startswith(f"assets/{VERSION}/") for link in links), links
    assert "//" not in result.text.replace("<!DOCTYPE", "")  # no absolute URL: no other host


def test_docs_without_slash_redirects_to_the_page(client):
    result = client.simulate_get("/api/docs")
    assert result.status_code == 301
    assert result.headers["location"] == "/api/docs/"


def test_initializer_reads_the_json_document_and_disables_the_validator(client):
    result = client.simulate_get(f"{ASSETS}/init.js")
    assert result.status_code == 200
    assert result.headers["content-type"] == "text/javascript; charset=utf-8"
    assert '"../schema/?format=json"' in result.text  # /api/schema/?format=json from /api/docs/
    assert "validatorUrl: null" in result.text
    assert "http" not in result.text


@pytest.mark.parametrize(
    "name,content_type",
    [
        ("swagger-ui-bundle.js", "text/javascript; charset=utf-8"),
        ("swagger-ui.css", "text/css; charset=utf-8"),
        ("page.css", "text/css; charset=utf-8"),
        ("init.js", "text/javascript; charset=utf-8"),
        ("favicon-32x32.png", "image/png"),
        ("favicon-16x16.png", "image/png"),
        ("LICENSE", "text/plain; charset=utf-8"),
    ],
)
def test_every_asset_is_served_with_its_type_and_immutable_caching(client, name, content_type):
    result = client.simulate_get(f"{ASSETS}/{name}")
    assert result.status_code == 200, name
    assert result.headers["content-type"] == content_type
    assert result.headers["cache-control"] == "public, max-age=31536000, immutable"
    assert result.headers["x-content-type-options"] == "nosniff"
    assert int(result.headers["content-length"]) == len(result.content) > 0
    if name.endswith(".png"):
        assert result.content.startswith(b"\x89PNG")
    again = client.simulate_get(f"{ASSETS}/{name}", headers={"If-None-Match": result.headers["etag"]})
    assert again.status_code == 304
    assert again.content == b""


def test_the_page_names_every_asset_the_list_holds(client):
    page = client.simulate_get("/api/docs/").text
    for name in set(docs.ASSETS) - {"LICENSE"}:
        assert f"assets/{VERSION}/{name}" in page, name


def test_the_bundle_is_swagger_ui_5_which_renders_openapi_3_1(client):
    bundle = client.simulate_get(f"{ASSETS}/swagger-ui-bundle.js").content
    assert re.search(rb'PACKAGE_VERSION:"5\.\d+\.\d+"', bundle)


@pytest.mark.parametrize(
    "path",
    [
        "/api/docs/../../etc/passwd",
        "/api/docs/assets/../../../etc/passwd",
        f"/api/docs/assets/{VERSION}/../../../../etc/passwd",
        f"/api/docs/assets/{VERSION}/..%2F..%2F..%2Fetc%2Fpasswd",
        f"/api/docs/assets/{VERSION}/%2e%2e/core.py",
        f"/api/docs/assets/{VERSION}/../core.py",
        f"/api/docs/assets/{VERSION}//etc/passwd",
        f"/api/docs/assets/{VERSION}/swagger-editor.js",  # in the package's static/, not in the list
        f"/api/docs/assets/{VERSION}/oauth2-redirect.html",
        f"/api/docs/assets/{VERSION}/",
        f"/api/docs/assets/{VERSION}",
        "/api/docs/assets/0.0.0/swagger-ui-bundle.js",  # another version's URL
        "/api/docs/swagger-ui-bundle.js",
        "/api/docs/index.html",
        "/api/docsx",
        "/api/docs.json",
    ],
)
def test_anything_else_under_docs_is_404(client, path):
    result = client.simulate_get(path)
    assert result.status_code == 404, (path, result.headers, result.content[:100])
    assert result.json == {"detail": "404 Not Found"}
    assert b"root:" not in result.content


def test_docs_answer_options_and_refuse_other_methods(client):
    options = client.simulate_options("/api/docs/")
    assert options.status_code == 200
    assert options.headers["allow"] == "GET, HEAD, OPTIONS"
    assert options.content == b""
    head = client.simulate_head("/api/docs/")
    assert head.status_code == 200 and head.content == b""
    for method in ("POST", "PUT", "DELETE", "PATCH"):
        result = client.simulate_request(method, f"{ASSETS}/init.js")
        assert result.status_code == 405, method
        assert result.headers["allow"] == "GET, HEAD, OPTIONS"
        assert result.json == {"detail": "405 Method Not Allowed"}


def test_docs_leave_the_api_routes_alone(client):
    assert client.simulate_get("/healthz").json == {"status": "ok"}
    assert client.simulate_get("/api/schema/").status_code == 200


def test_a_websocket_to_docs_is_closed(client):
    async def connect() -> None:
        async with falcon.testing.ASGIConductor(client.app) as conductor:
            with pytest.raises(falcon.errors.WebSocketDisconnected):
                async with conductor.simulate_ws("/api/docs/") as ws:
                    await ws.receive_text()

    asyncio.run(connect())
