"""/api/docs/ in a real headless browser against the real web (gunicorn + uvicorn workers):
Swagger UI renders every operation of /api/schema/ with no console error, no page error, no
failed request and no request to any host but the service's.

The browser is Debian's chromium (``apt-get install chromium``) driven by Playwright's Python
package; Playwright's own browser builds are not used (``playwright install`` is not needed).
Missing chromium or Playwright: skipped, but a failure when CI is set.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import Stack

pytestmark = pytest.mark.e2e

CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
RENDER_TIMEOUT_MS = 60_000
# the operations the page must show: path -> its summary in schemas/openapi.yaml
EXPECTED = {
    "/api/marketplace-public-api/set_usage/": "Report a resource's usage (one signed report).",
    "/api/marketplace-public-api/check_signature/": "Check that a provider's token verifies.",
    "/api/marketplace-public-api/set_usages/": "Report many signed reports of one provider at once.",
    "/api/usage-reports/{report_id}/": "A report's state.",
}


def _missing(what: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"{what} is missing and CI is set: apt-get install -y chromium; pip install playwright")
    pytest.skip(f"{what} is missing (apt-get install chromium; pip install playwright)")


@pytest.fixture
def chromium() -> str:
    found = CHROMIUM if os.access(CHROMIUM, os.X_OK) else shutil.which("chromium")
    if found is None:
        _missing("chromium")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        _missing("playwright (the Python package)")
    assert found is not None
    return found


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)  # the page needs no database
def test_docs_render_every_operation_without_errors(chromium: str, stack: Stack, tmp_path: Path) -> None:
    from playwright.sync_api import Route, sync_playwright

    problems: list[str] = []
    elsewhere: list[str] = []
    schema_requests: list[str] = []

    def only_the_service(route: Route) -> None:
        url = route.request.url
        if url.startswith(f"{stack.url}/"):
            if url.startswith(f"{stack.url}/api/schema/"):
                schema_requests.append(url)
            route.continue_()
        else:  # nothing may leave for another host: refused, and the test fails
            elsewhere.append(url)
            route.abort()

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 1600})
            page.on("console", lambda m: problems.append(f"console: {m.text}") if m.type == "error" else None)
            page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
            page.on("requestfailed", lambda r: problems.append(f"failed: {r.url} {r.failure}"))
            page.on(
                "response",
                lambda r: problems.append(f"HTTP {r.status}: {r.url}") if r.status >= 400 else None,
            )
            page.route("**/*", only_the_service)

            answer = page.goto(f"{stack.url}/api/docs/", wait_until="load")
            assert answer is not None and answer.status == 200
            page.wait_for_selector(".opblock-summary-path", timeout=RENDER_TIMEOUT_MS)
            page.wait_for_load_state("networkidle")
            rendered: dict[str, Any] = page.evaluate(
                """() => Object.fromEntries([...document.querySelectorAll('.opblock-summary')].map(s => [
                    s.querySelector('.opblock-summary-path').getAttribute('data-path'),
                    (s.querySelector('.opblock-summary-description') || {}).innerText || '']))"""
            )
            title = page.locator(".information-container .title").inner_text()
            page.screenshot(
                path=os.environ.get("API_DOCS_SCREENSHOT") or str(tmp_path / "api-docs.png"), full_page=True
            )
        finally:
            browser.close()

    assert not problems, problems
    assert not elsewhere, f"requests to other hosts: {elsewhere}"
    assert schema_requests == [f"{stack.url}/api/schema/?format=json"], schema_requests
    assert "usage-ingest" in title
    for path, summary in EXPECTED.items():
        assert path in rendered, f"{path} not rendered; rendered: {sorted(rendered)}"
        assert rendered[path] == summary, (path, rendered[path])
    stack.assert_healthy()
