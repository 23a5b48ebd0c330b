"""The docs and playground pages: everything they load is shipped with the service (Swagger UI at the pinned
version, byte for byte what vendor.json records), and they are sent with a strict Content-Security-Policy."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any

import pytest

from imagecore.edge.pages import ASSETS, PAGES, content_security_policy

STATIC = Path(__file__).resolve().parents[2] / "functions" / "health" / "static"


def test_swagger_ui_files_are_the_pinned_release():
    record = json.loads((STATIC / "swagger-ui" / "vendor.json").read_text())

    assert record["package"] == "swagger-ui-dist"
    assert re.fullmatch(r"\d+\.\d+\.\d+", record["version"])
    assert record["integrity"].startswith("sha512-")
    for name, digest in record["sha256"].items():
        assert hashlib.sha256((STATIC / "swagger-ui" / name).read_bytes()).hexdigest() == digest, name


def test_every_page_loads_only_assets_of_the_service():
    for page in PAGES.values():
        html = (STATIC / page).read_text()
        sources = re.findall(r'(?:src|href)="([^"]+)"', html)
        assert sources, page
        for source in sources:
            # a link to the other page is not a load
            shipped = source.startswith("assets/") and source[7:] in ASSETS
            assert source in ("data:,", "docs") or shipped, (page, source)
        assert "<script>" not in html and "style=" not in html and "<style" not in html, "nothing inline"
    for path, _ in ASSETS.values():
        assert (STATIC / path).is_file(), path


def test_no_page_script_stores_a_credential():
    for name in [name for name in ASSETS if name.endswith(".js") and not name.startswith("swagger")]:
        # the code, without its comments (which say where nothing goes)
        script = "\n".join(line.split("//")[0] for line in (STATIC / name).read_text().splitlines())
        assert "localStorage" not in script
        assert "sessionStorage" not in script and "document.cookie" not in script
    assert "persistAuthorization: false" in (STATIC / "docs.js").read_text()


def policy(text: str) -> dict[str, list[str]]:
    return {d.split()[0]: d.split()[1:] for d in text.split(";")}


def test_the_policy_allows_only_the_service_and_s3_images():
    aws = policy(content_security_policy())
    local = policy(content_security_policy("http://127.0.0.1:4566/"))

    assert aws["default-src"] == ["'none'"]
    assert aws["script-src"] == aws["style-src"] == aws["connect-src"] == ["'self'"]
    assert aws["frame-ancestors"] == aws["object-src"] == aws["base-uri"] == ["'none'"]
    assert aws["img-src"] == ["'self'", "data:", "blob:", "https://*.amazonaws.com"]
    assert local["img-src"][-1] == "http://127.0.0.1:4566"


@pytest.mark.parametrize("route", ["/v1/docs", "/v1/playground"])
def test_the_health_function_serves_each_page_with_the_policy(route: str, api_event: Any, lambda_context: Any):
    from functions.health import app as health

    event = api_event("health")
    event["path"] = event["resource"] = route

    response = health.lambda_handler(event, lambda_context)

    headers = response["multiValueHeaders"]
    assert response["statusCode"] == 200
    assert headers["Content-Security-Policy"][0].startswith("default-src 'none'")
    assert headers["X-Frame-Options"] == ["DENY"]
    assert "assets/" in response["body"]


def test_assets_are_served_by_name_and_nothing_else(api_event: Any, lambda_context: Any):
    from functions.health import app as health

    event = api_event("health")
    event["resource"] = "/v1/assets/{name}"
    event["path"] = "/v1/assets/swagger-ui-bundle.js"
    event["pathParameters"] = {"name": "swagger-ui-bundle.js"}
    bundle = health.lambda_handler(event, lambda_context)
    event["path"] = "/v1/assets/vendor.json"
    event["pathParameters"] = {"name": "vendor.json"}
    other = health.lambda_handler(event, lambda_context)

    assert bundle["statusCode"] == 200
    assert bundle["multiValueHeaders"]["Content-Type"] == ["text/javascript; charset=utf-8"]
    assert "SwaggerUIBundle" in bundle["body"]
    assert other["statusCode"] == 404
    assert json.loads(other["body"])["error"]["code"] == "unknown_asset"
