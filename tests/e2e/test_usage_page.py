"""End-to-end test of the usage page in a real headless Chromium (Debian's chromium + chromedriver, Selenium).

The page is loaded from a real relay, signs in with the admin token, and must show the numbers that
/relay/usage and /relay/upstreams report.  Without Chromium the test is skipped locally and fails in CI.
"""
from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import pytest

from .harness import http, wait_until

pytestmark = pytest.mark.timeout(180)

UPSTREAM_KEY = "up-key-page-e2e-77Tq"
ADMIN_TOKEN = "admin-token-page-e2e-Lm42"
KEY_A = "client-key-page-e2e-aaA1"
KEY_B = "client-key-page-e2e-bbB2"
CHROMIUM_FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-dev-shm-usage", "--no-proxy-server", "--window-size=1400,1000",
)
WAIT_SECONDS = 30


def missing(message: str):
    """A missing browser fails the test in CI (CI must not silently skip) and skips it elsewhere."""
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


def executable(name: str, *fallbacks: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    return next((path for path in fallbacks if Path(path).exists()), None)


@pytest.fixture
def browser(tmp_path, monkeypatch):
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        missing("selenium is not installed: pip install -r requirements-dev.txt")
    chromium = executable("chromium", "/usr/bin/chromium")
    driver_path = executable("chromedriver", "/usr/bin/chromedriver")
    if chromium is None or driver_path is None:
        missing("Chromium is not installed: apt-get install chromium chromium-driver")
    monkeypatch.setenv("SE_OFFLINE", "true")  # Selenium must never fetch a driver or browser of its own
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path / 'chromium-profile'}")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    service = Service(executable_path=driver_path, log_output=str(tmp_path / "chromedriver.log"))
    driver = webdriver.Chrome(service=service, options=options)
    driver.set_page_load_timeout(WAIT_SECONDS)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture
def busy_relay(relay_factory, fake_upstream):
    """A relay with admin token and two client keys that has served a few calls, some of them failing."""
    relay = relay_factory(env={"RELAY_UPSTREAM_KEYS": UPSTREAM_KEY, "RELAY_API_KEYS": f"{KEY_A},{KEY_B}",
                               "RELAY_ADMIN_TOKEN": ADMIN_TOKEN})
    body = json.dumps({"contents": [{"role": "user", "parts": [{"text": "hello"}]}]})
    calls = [(KEY_A, "gemini-2.5-flash:generateContent"), (KEY_A, "gemini-2.5-flash:generateContent"),
             (KEY_B, "gemini-2.5-pro:streamGenerateContent?alt=sse"), (KEY_A, "missing-model:generateContent"),
             ("not-a-relay-key-0000", "gemini-2.5-flash:generateContent")]
    session = http()
    for key, path in calls:
        session.post(f"{relay.url}/v1beta/models/{path}", data=body, timeout=30,
                     headers={"Content-Type": "application/json", "x-goog-api-key": key})
    upstream_attempts = 4  # the unauthenticated call never leaves the relay
    assert wait_until(lambda: sum(row["requests"] for row in api(relay, "usage?group=key")["rows"]) == len(calls),
                      timeout=15, interval=0.3)
    assert wait_until(lambda: upstream_requests(api(relay, "upstreams")) == upstream_attempts, timeout=15, interval=0.3)
    return relay


def api(relay, path: str) -> dict:
    response = http().get(f"{relay.url}/relay/{path}", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}, timeout=30)
    assert response.status_code == 200, response.text
    return response.json()


def upstream_requests(report: dict) -> int:
    return sum(key.get("counters", {}).get("requests", 0) for upstream in report["upstreams"] for key in upstream["keys"])


def row_where(browser, selector: str, attribute: str, value):
    """The one row matching `selector` whose `attribute` is `value` (compared in Python: no CSS escaping)."""
    from selenium.webdriver.common.by import By

    wanted = "" if value is None else str(value)
    matches = [row for row in browser.find_elements(By.CSS_SELECTOR, selector)
               if row.get_attribute(attribute) == wanted]
    assert len(matches) == 1, (selector, attribute, wanted, [row.get_attribute(attribute) for row in matches])
    return matches[0]


def shown_number(cell) -> int:
    return int(cell.text.replace(",", "").split()[-1])


def sign_in(browser, token: str) -> None:
    from selenium.webdriver.common.by import By

    field = browser.find_element(By.ID, "token")
    field.clear()
    field.send_keys(token)
    browser.find_element(By.ID, "signin-button").click()


def wait_for_state(browser, *states: str) -> str:
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(browser, WAIT_SECONDS).until(
        lambda driver: driver.execute_script("return document.body.dataset.state") in states
        and driver.execute_script("return document.body.dataset.state"))


def test_the_page_is_static_and_locked_down(busy_relay):
    response = http().get(f"{busy_relay.url}/relay/", timeout=30)
    assert response.status_code == 200 and response.headers["Content-Type"].startswith("text/html")
    assert "default-src 'none'" in response.headers["Content-Security-Policy"]
    assert "connect-src 'self'" in response.headers["Content-Security-Policy"]
    page = response.text
    assert ADMIN_TOKEN not in page and "static:" not in page  # no data in the page itself
    references = re.findall(r'(?:src|href|action)\s*=\s*["\']([^"\']*)', page)
    assert all(reference.startswith("data:") for reference in references), references  # nothing from elsewhere
    assert "fetch(\"/relay/" in page or "api(\"/relay/" in page


def test_usage_page_shows_what_the_api_reports(busy_relay, browser):
    from selenium.webdriver.common.by import By

    relay = busy_relay
    browser.get(f"{relay.url}/relay/")
    assert wait_for_state(browser, "signed-out") == "signed-out"
    assert browser.find_element(By.ID, "token").is_displayed()
    assert not browser.find_element(By.ID, "report").is_displayed()

    sign_in(browser, "not-the-admin-token")
    assert wait_for_state(browser, "error") == "error"
    assert "not accepted" in browser.find_element(By.ID, "status").text
    assert browser.find_element(By.ID, "token").is_displayed()

    sign_in(browser, ADMIN_TOKEN)
    assert wait_for_state(browser, "ready") == "ready"
    assert browser.find_element(By.ID, "report").is_displayed()
    assert browser.execute_script("return sessionStorage.getItem('relay.adminToken')") == ADMIN_TOKEN

    fields = ("requests", "errors", "prompt_tokens", "candidates_tokens", "thoughts_tokens", "cached_tokens",
              "tool_use_tokens", "total_tokens")
    for group, table in (("key", "by-key"), ("model", "by-model"), ("day", "by-day")):
        rows = api(relay, f"usage?group={group}&days=7")["rows"]
        assert rows, group
        shown = browser.find_elements(By.CSS_SELECTOR, f"#{table} tbody tr")
        assert len(shown) == len(rows), (group, [row.text for row in shown])
        for row in rows:
            line = row_where(browser, f"#{table} tbody tr", "data-group", row[group])
            for field in fields:
                cell = line.find_element(By.CSS_SELECTOR, f"td[data-field={field}]")
                assert shown_number(cell) == row[field], (group, row[group], field)
        total = browser.find_element(By.CSS_SELECTOR, f"#{table} tfoot td[data-field=total_tokens]")
        assert shown_number(total) == sum(row["total_tokens"] for row in rows)

    by_key = api(relay, "usage?group=key&days=7")["rows"]
    names = {http().get(f"{relay.url}/relay/usage", headers={"x-goog-api-key": key}, timeout=30).json()["client"]
             for key in (KEY_A, KEY_B)}
    assert {row["key"] for row in by_key} == {None, *names}
    for card, field in (("total-requests", "requests"), ("total-errors", "errors"), ("total-tokens", "total_tokens"),
                        ("total-prompt-tokens", "prompt_tokens"), ("total-candidates-tokens", "candidates_tokens")):
        assert shown_number(browser.find_element(By.ID, card)) == sum(row[field] for row in by_key), card
    assert shown_number(browser.find_element(By.ID, "total-requests")) == 5
    assert shown_number(browser.find_element(By.ID, "total-tokens")) > 0

    errors = {row["status"]: row for row in api(relay, "usage?group=status&days=7")["rows"] if row["status"] >= 400}
    assert set(errors) == {401, 404}
    shown_errors = browser.find_elements(By.CSS_SELECTOR, "#errors-by-status tbody tr")
    assert sorted(int(row.get_attribute("data-group")) for row in shown_errors) == [401, 404]
    for status, row in errors.items():
        line = row_where(browser, "#errors-by-status tbody tr", "data-group", status)
        assert shown_number(line.find_element(By.CSS_SELECTOR, "td[data-field=requests]")) == row["requests"]

    [upstream] = api(relay, "upstreams")["upstreams"]
    [key] = upstream["keys"]
    line = row_where(browser, "#upstream-keys tbody tr", "data-key-id", key["id"])
    assert key["key"] == f"…{UPSTREAM_KEY[-4:]}" and key["key"] in line.text and UPSTREAM_KEY not in line.text
    assert line.find_element(By.CSS_SELECTOR, "td[data-field=state]").text == key["state"] == "healthy"
    assert shown_number(line.find_element(By.CSS_SELECTOR, "td[data-field=requests]")) == key["counters"]["requests"]
    assert shown_number(line.find_element(By.CSS_SELECTOR, "td[data-field=failures]")) == key["counters"].get("failures", 0)

    browser.refresh()  # the token lives in sessionStorage: no second sign-in in this tab
    assert wait_for_state(browser, "ready") == "ready"
    browser.find_element(By.ID, "signout").click()
    assert browser.find_element(By.ID, "token").is_displayed()
    assert browser.execute_script("return sessionStorage.getItem('relay.adminToken')") is None

    problems = [entry for entry in browser.get_log("browser") if entry["level"] == "SEVERE"
                and "status of 401" not in entry["message"]]
    assert not problems, problems  # no script errors, no CSP violations
