"""The playground's conversation panel (POST /v1/responses) in headless Chromium against the local stack: two
turns, the second sent with the first's id, streamed previews, the stored images shown from S3."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.e2e.browser import MISSING, chromium, console_errors, find_browser
from tests.e2e.conftest import API_KEY, RunningStack

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120), pytest.mark.skipif(find_browser() is None, reason=MISSING)]


@pytest.fixture(scope="module")
def driver() -> Iterator[Any]:
    with chromium() as browser:
        yield browser


def wait_for(driver: Any, script: str, timeout: float = 60) -> Any:
    from selenium.webdriver.support.ui import WebDriverWait

    try:
        return WebDriverWait(driver, timeout, poll_frequency=0.1).until(lambda d: d.execute_script(f"return {script}"))
    except Exception:
        print("PAGE", driver.execute_script("return document.body.innerText")[-2000:], console_errors(driver))
        raise


def shown_images(driver: Any, turn: int) -> list[dict[str, Any]]:
    return driver.execute_script(
        f"""return [...document.querySelectorAll('#conversation-log .turn.assistant')][{turn}]
               .querySelectorAll('img').values().toArray().map(img => ({{
                 complete: img.complete, width: img.naturalWidth, src: img.src,
                 preview: img.parentElement.classList.contains('preview')}}))"""
    )


def test_the_conversation_panel_continues_a_conversation(stack: RunningStack, driver: Any) -> None:
    from selenium.webdriver.common.by import By

    calls = stack.upstream_calls()
    driver.get(stack.api_url + "/playground")
    driver.execute_script(
        """window.previews = 0;
           new MutationObserver((changes) => {
             for (const c of changes) if (c.target.closest && c.target.closest('figure.preview')) window.previews++;
           }).observe(document.getElementById('conversation-log'),
                      {subtree: true, childList: true, attributes: true});"""
    )
    driver.find_element(By.ID, "credential").send_keys(API_KEY)
    driver.find_element(By.ID, "conversation-input").send_keys("draw a red kite over a beach")
    driver.find_element(By.ID, "conversation-send").click()
    wait_for(driver, "document.getElementById('conversation-status').textContent.includes('Answered')")
    first_id = driver.execute_script(
        "return document.querySelector('#conversation-log .turn.assistant').dataset.responseId"
    )
    driver.find_element(By.ID, "conversation-input").send_keys("now make the kite blue")
    driver.find_element(By.ID, "conversation-send").click()
    wait_for(driver, "document.querySelectorAll('#conversation-log .turn.assistant[data-response-id]').length == 2")
    wait_for(driver, "[...document.querySelectorAll('#conversation-log img')].every(i => i.complete && i.naturalWidth)")

    assert first_id.startswith("resp_")
    for turn in (0, 1):
        (image,) = shown_images(driver, turn)
        assert image["width"] == 1024 and "X-Amz-Signature=" in image["src"] and not image["preview"]
    assert driver.execute_script("return window.previews") > 0
    texts = driver.execute_script(
        "return [...document.querySelectorAll('#conversation-log .turn.assistant p.text')].map(p => p.textContent)"
    )
    assert len(texts) == 2 and all(text.startswith("Here is the image") for text in texts)
    stats = stack.upstream_calls()
    assert stats == calls + 2
    assert console_errors(driver) == []
