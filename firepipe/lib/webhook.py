"""POSTing JSON to a webhook with the standard library, every failure returned as a reason for
the caller to record (the local notifier's outbox keeps it on the row and retries later)."""

import http.client
import json
import urllib.error
import urllib.request
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

WEBHOOK_SCHEMES = ("http", "https")


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    """urllib would follow a 301/302/303 to a GET without the body and report the GET's 200:
    a redirect is a failed delivery instead."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


_OPENER = urllib.request.build_opener(_NoRedirects)


def check_webhook_url(url: str) -> str:
    """`url` when it is an http(s) URL with a host; ValueError otherwise (urllib would also
    open file:// and ftp:// URLs)."""
    parts = urlsplit(url)
    if parts.scheme not in WEBHOOK_SCHEMES or not parts.hostname:
        raise ValueError(f"a webhook URL must be http:// or https:// with a host, got {url!r}")
    return url


def webhook_host(url: str) -> str:
    """The URL's scheme and host, for messages: its path may hold a token (Slack, Teams)."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}"


def post_json(url: str, payload: Mapping[str, Any], timeout_s: float) -> str | None:
    """POST `payload` as JSON to `url`; None when it answered 2xx, else why not (refused,
    unreachable, timed out, another status, a URL that is not http(s))."""
    try:
        check_webhook_url(url)
    except ValueError as error:
        return str(error)
    request = urllib.request.Request(
        url,
        data=json.dumps(payload).encode(),
        headers={"Content-Type": "application/json", "User-Agent": "firepipe-notifier"},
        method="POST",
    )
    try:
        with _OPENER.open(request, timeout=timeout_s) as response:
            status = int(response.status)
    except urllib.error.HTTPError as error:
        return f"HTTP {error.code} {error.reason}"
    except urllib.error.URLError as error:
        return f"unreachable: {error.reason}"
    except TimeoutError:
        return f"no answer within {timeout_s:g} s"
    except (OSError, http.client.HTTPException) as error:
        return f"{type(error).__name__}: {error}"
    return None if 200 <= status < 300 else f"HTTP {status}"
