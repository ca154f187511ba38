"""The answers to a client's mistakes, from the running service: 413 for a body over 6 MiB
(received by a client still sending it, then a clean close), 415, 400 with the reason; never
a 5xx."""

from __future__ import annotations

import socket
import threading
from urllib.parse import urlsplit

import orjson
import pytest
import requests

from firepipe.core.serving.payloads import MAX_BODY_BYTES
from firepipe_tests.services.inference.serving_sample import readings

pytestmark = pytest.mark.slow

SEVEN_MIB = 7 * 1024 * 1024


def exchange(url: str, head: bytes, chunks: list[bytes]) -> tuple[bytes, str, BaseException | None]:
    """Send `head` and then `chunks` from a thread while reading the answer here, as a real
    client does: (what came back, how the connection ended: 'closed' or 'reset', the sender's
    error if it failed)."""
    parts = urlsplit(url)
    sock = socket.create_connection((parts.hostname, parts.port), timeout=20)
    failed: list[BaseException] = []

    def send() -> None:
        try:
            sock.sendall(head)
            for chunk in chunks:
                sock.sendall(chunk)
        except OSError as e:
            failed.append(e)

    sender = threading.Thread(target=send)
    sender.start()
    received, ending = b"", "closed"
    try:
        while data := sock.recv(65536):
            received += data
    except ConnectionResetError:
        ending = "reset"
    sender.join(timeout=20)
    sock.close()
    return received, ending, failed[0] if failed else None


def head(lines: list[str]) -> bytes:
    return ("\r\n".join(["POST /invocations HTTP/1.1", "host: test", *lines]) + "\r\n\r\n").encode()


def test_413_for_a_declared_length_over_the_limit_reaches_the_client(open_server: str) -> None:
    request = head(["content-type: application/json", f"content-length: {SEVEN_MIB}"])
    body = [b"x" * 65536] * (SEVEN_MIB // 65536)
    received, ending, failed = exchange(open_server, request, body)
    assert received.startswith(b"HTTP/1.1 413 "), received[:200]
    assert b"connection: close" in received.lower()
    assert received.endswith(
        orjson.dumps({"detail": f"the body is larger than {MAX_BODY_BYTES} bytes"})
    )
    assert (ending, failed) == ("closed", None)  # all 7 MiB went out, no reset


def test_413_for_a_chunked_body_over_the_limit_reaches_the_client(open_server: str) -> None:
    request = head(["content-type: application/json", "transfer-encoding: chunked"])
    piece = b"x" * 65536
    chunks = [b"%x\r\n%s\r\n" % (len(piece), piece)] * (SEVEN_MIB // len(piece)) + [b"0\r\n\r\n"]
    received, ending, failed = exchange(open_server, request, chunks)
    assert received.startswith(b"HTTP/1.1 413 "), received[:200]
    assert (ending, failed) == ("closed", None)


def test_413_without_the_body_when_the_client_waits_for_100_continue(open_server: str) -> None:
    request = head(
        ["content-type: application/json", f"content-length: {SEVEN_MIB}", "expect: 100-continue"]
    )
    received, ending, _ = exchange(open_server, request, [])
    assert received.startswith(b"HTTP/1.1 413 "), received[:200]
    assert b"100 Continue" not in received
    assert ending == "closed"


def test_a_body_at_the_limit_is_read(open_server: str, http: requests.Session) -> None:
    sent = readings("limits-large", 2_000)
    body = orjson.dumps({"readings": sent})
    padded = body[:-2] + b" " * (MAX_BODY_BYTES - len(body)) + body[-2:]  # JSON allows spaces
    assert len(padded) == MAX_BODY_BYTES
    answer = http.post(
        f"{open_server}/invocations", data=padded, headers={"content-type": "application/json"}
    )
    assert answer.status_code == 200, answer.text[:300]
    assert len(answer.json()["predictions"]) == 2_000


@pytest.mark.parametrize(
    "content_type", [None, "application/xml", "text/plain", "application/json; charset=latin-1"]
)
def test_415_for_a_content_type_not_read(
    open_server: str, http: requests.Session, content_type: str | None
) -> None:
    body = orjson.dumps({"readings": readings("limits-415", 1)})
    headers = {} if content_type is None else {"content-type": content_type}
    answer = http.post(f"{open_server}/invocations", data=body, headers=headers)
    assert answer.status_code == 415
    assert "application/json" in answer.json()["detail"] or "UTF-8" in answer.json()["detail"]


@pytest.mark.parametrize(
    ("body", "media", "reason"),
    [
        (b"{", "application/json", "not valid JSON"),
        (b'{"readings": []}', "application/json", "non-empty list"),
        (
            b'{"readings": [{"device_id": "d", "ts": "yesterday"}]}',
            "application/json",
            "readings[0]: field ts: 'yesterday' is not an ISO 8601 timestamp",
        ),
        (
            b'{"readings": [{"device_id": "d", "ts": "2026-01-01T00:00:00Z", "colour": 1}]}',
            "application/json",
            "readings[0]: unknown field(s) ['colour']",
        ),
        (
            b'{"device_id": "d", "ts": "2026-01-01T00:00:00Z"}\n{"device_id": 5}\n',
            "application/jsonlines",
            "line 2: field device_id",
        ),
        (b"device_id,ts,co_ppm\nd,2026-01-01T00:00:00Z,lots\n", "text/csv", "line 2: field co_ppm"),
        # the engine's refusals: a value silver would quarantine, a time in the future
        (
            b'{"readings": [{"device_id": "d", "ts": "2026-01-01T00:00:00Z", "co_ppm": -5}]}',
            "application/json",
            "co_ppm=-5 outside",
        ),
        (
            b'{"readings": [{"device_id": "d", "ts": "2999-01-01T00:00:00Z"}]}',
            "application/json",
            "is after now",
        ),
    ],
)
def test_400_names_the_reading_and_the_field(
    open_server: str, http: requests.Session, body: bytes, media: str, reason: str
) -> None:
    answer = http.post(f"{open_server}/invocations", data=body, headers={"content-type": media})
    assert answer.status_code == 400
    assert reason in answer.json()["detail"]


def test_other_methods_and_paths(open_server: str, http: requests.Session) -> None:
    assert http.get(f"{open_server}/invocations").status_code == 405
    assert http.get(f"{open_server}/nothing").status_code == 404
