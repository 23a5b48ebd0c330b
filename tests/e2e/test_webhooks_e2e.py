"""Webhooks end to end through the local stack (``make run``): a receiver on 127.0.0.1 (plain http, which only
the local stack allows) verifies every delivery with the reference Standard Webhooks library; a failing receiver
is retried on the local schedule of seconds and given up after the last attempt; a rotation signs with both
secrets; refused URLs are 400s before any task exists."""

from __future__ import annotations

import io
import itertools
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest
from PIL import Image
from standardwebhooks import Webhook

from tests.e2e.conftest import API_KEY

pytestmark = pytest.mark.e2e

SECOND_KEY = "isk-e2e-second-key"
# The local schedule (local/server.py): attempts after 0, 1, 1, 2, 2, 3, 3, 4 seconds.
LOCAL_SCHEDULE = (0, 1, 1, 2, 2, 3, 3, 4)


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@dataclass
class Receiver:
    answers: list[int] = field(default_factory=list)
    always: int = 204
    got: list[tuple[dict[str, str], bytes, float]] = field(default_factory=list)
    url: str = ""

    def wait_for(self, count: int, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while len(self.got) < count and time.monotonic() < deadline:
            time.sleep(0.1)
        assert len(self.got) >= count, f"{len(self.got)} deliveries of {count}"


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    made = Receiver()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            made.got.append(({k.lower(): v for k, v in self.headers.items()}, body, time.monotonic()))
            self.send_response(made.answers.pop(0) if made.answers else made.always)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    made.url = f"http://127.0.0.1:{server.server_address[1]}/webhooks/images"
    yield made
    server.shutdown()
    server.server_close()


def secret_of(stack: Any, key: str = API_KEY) -> str:
    answer = httpx.get(stack.api_url + "/webhooks/secret", headers=bearer(key), timeout=30)
    assert answer.status_code == 200, answer.text
    return str(answer.json()["secret"])


def submit(stack: Any, body: dict[str, Any], key: str = API_KEY) -> dict[str, Any]:
    answer = httpx.post(stack.api_url + "/images/generations/async", json=body, headers=bearer(key), timeout=30)
    assert answer.status_code == 202, answer.text
    return dict(answer.json())


def webhook_state(stack: Any, task_id: str, until: tuple[str, ...], key: str = API_KEY, timeout: float = 60) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        view = httpx.get(f"{stack.api_url}/images/tasks/{task_id}", headers=bearer(key), timeout=30).json()
        if view["webhook"]["status"] in until or time.monotonic() > deadline:
            return view
        time.sleep(0.25)


def test_a_completed_task_is_delivered_once_and_verifies_with_the_reference_library(stack, receiver):
    secret = secret_of(stack)
    task = submit(stack, {"prompt": "a lighthouse at dawn", "size": "1024x1024", "webhook_url": receiver.url})
    assert task["webhook"] == {"status": "pending", "attempts": 0, "last_status": None}

    view = webhook_state(stack, task["id"], ("delivered", "failed"))
    assert view["webhook"] == {"status": "delivered", "attempts": 1, "last_status": 204}
    (delivery,) = receiver.got
    headers, body, _ = delivery
    payload = Webhook(secret).verify(body, headers)
    assert headers["webhook-id"] == f"msg_{task['id']}"
    assert payload["type"] == "image.task.completed"
    data = payload["data"]
    assert (data["id"], data["status"], data["http_status"]) == (task["id"], "completed", 200)
    # The URL in the delivery downloads the real image.
    image = Image.open(io.BytesIO(httpx.get(data["image_url"], timeout=30).content))
    assert image.size == (1024, 1024)
    time.sleep(1.5)
    assert len(receiver.got) == 1  # once


def test_an_edit_task_from_a_multipart_form_is_delivered_too(stack, receiver):
    secret = secret_of(stack)
    png = io.BytesIO()
    Image.new("RGB", (256, 256), (30, 90, 200)).save(png, "PNG")
    answer = httpx.post(
        stack.api_url + "/images/edits/async",
        data={"prompt": "make it red", "webhook_url": receiver.url},
        files=[("image", ("in.png", png.getvalue(), "image/png"))],
        headers=bearer(API_KEY),
        timeout=30,
    )
    assert answer.status_code == 202, answer.text
    view = webhook_state(stack, answer.json()["id"], ("delivered", "failed"))
    assert view["webhook"]["status"] == "delivered"
    payload = Webhook(secret).verify(receiver.got[0][1], receiver.got[0][0])
    assert payload["data"]["id"] == answer.json()["id"]


def test_a_failing_receiver_is_retried_on_the_local_schedule_until_it_answers(stack, receiver):
    secret = secret_of(stack)
    receiver.answers = [500, 502, 503]
    task = submit(stack, {"prompt": "a lighthouse", "webhook_url": receiver.url})

    view = webhook_state(stack, task["id"], ("delivered", "failed"))
    assert view["webhook"] == {"status": "delivered", "attempts": 4, "last_status": 204}
    assert len(receiver.got) == 4
    assert {headers["webhook-id"] for headers, _, _ in receiver.got} == {f"msg_{task['id']}"}
    for headers, body, _ in receiver.got:
        Webhook(secret).verify(body, headers)
    arrivals = [at for _, _, at in receiver.got]
    gaps = [later - earlier for earlier, later in itertools.pairwise(arrivals)]
    for gap, wait in zip(gaps, LOCAL_SCHEDULE[1:], strict=False):
        assert gap >= wait - 0.2, gaps


@pytest.mark.timeout(120)
def test_a_receiver_that_never_answers_2xx_is_given_up_after_the_last_attempt(stack, receiver):
    receiver.always = 500
    task = submit(stack, {"prompt": "a lighthouse", "webhook_url": receiver.url})
    view = webhook_state(stack, task["id"], ("delivered", "failed"), timeout=90)
    assert view["webhook"] == {"status": "failed", "attempts": len(LOCAL_SCHEDULE), "last_status": 500}
    assert len(receiver.got) == len(LOCAL_SCHEDULE)
    lines = [
        line
        for line in stack.log_lines()
        if line.get("message") == "webhook attempt" and line.get("task_id") == task["id"]
    ]
    assert [line["attempt"] for line in lines] == list(range(1, len(LOCAL_SCHEDULE) + 1))
    assert lines[-1]["webhook_status"] == "failed"


def test_after_a_rotation_deliveries_carry_both_signatures(stack, receiver):
    old = secret_of(stack, SECOND_KEY)
    rotated = httpx.post(stack.api_url + "/webhooks/secret/rotate", headers=bearer(SECOND_KEY), timeout=30)
    assert rotated.status_code == 200, rotated.text
    new = rotated.json()["secret"]
    assert new != old and new.startswith("whsec_") and rotated.json()["previous_valid_until"] > time.time()
    assert secret_of(stack, SECOND_KEY) == new

    task = submit(stack, {"prompt": "a lighthouse", "webhook_url": receiver.url}, key=SECOND_KEY)
    webhook_state(stack, task["id"], ("delivered", "failed"), key=SECOND_KEY)
    headers, body, _ = receiver.got[0]
    assert len(headers["webhook-signature"].split(" ")) == 2
    assert Webhook(new).verify(body, headers)["data"]["id"] == task["id"]
    assert Webhook(old).verify(body, headers)["data"]["id"] == task["id"]


@pytest.mark.parametrize(
    "url",
    [
        "https://169.254.169.254/latest/meta-data/",
        "http://169.254.169.254/latest/meta-data/",
        "https://10.1.2.3/hook",
        "https://[fd00::1]/hook",
        "https://[::ffff:192.168.0.1]/hook",
        "http://93.184.215.14/hook",
        "ftp://127.0.0.1/hook",
        "https://127.0.0.1/hook",  # locally only http:// may reach loopback
        "https://u:p@127.0.0.1/hook",
        "https://1.1.1.1/" + "a" * 2040,
    ],
)
def test_a_refused_url_is_a_400_on_webhook_url_and_makes_no_task(stack, url):
    answer = httpx.post(
        stack.api_url + "/images/generations/async",
        json={"prompt": "a lighthouse", "webhook_url": url},
        headers=bearer(API_KEY),
        timeout=30,
    )
    assert answer.status_code == 400, answer.text
    assert answer.json()["error"]["param"] == "webhook_url"
    assert "Location" not in answer.headers


def test_a_client_token_cannot_read_or_rotate_the_secret(stack):
    minted = httpx.post(stack.api_url + "/client_tokens", json={}, headers=bearer(API_KEY), timeout=30)
    assert minted.status_code == 200, minted.text
    token = minted.json()["token"]
    assert httpx.get(stack.api_url + "/webhooks/secret", headers=bearer(token), timeout=30).status_code == 403
    assert httpx.post(stack.api_url + "/webhooks/secret/rotate", headers=bearer(token), timeout=30).status_code == 403
