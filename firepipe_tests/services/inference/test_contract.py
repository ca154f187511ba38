"""The SageMaker serving contract against the running service: /ping, /invocations in the
three media types, /execution-parameters, and the committed OpenAPI document."""

from __future__ import annotations

import csv
import io
import json
import re
import threading
from pathlib import Path

import orjson
import pytest
import requests

from firepipe.core.serving.engine import ScoringEngine
from firepipe.core.serving.payloads import JSON, parse_readings
from firepipe.core.serving.scoring import ServingModel, load_serving_model
from firepipe.services.inference.app import create_app, openapi_document
from firepipe.services.inference.keys import Access
from firepipe.services.inference.source import FolderSource, ModelHolder
from firepipe_tests.services.inference.serving_sample import OPENAPI_PATH, readings, running

pytestmark = pytest.mark.slow


def invoke(http: requests.Session, url: str, body: bytes, media: str, **headers: str):  # type: ignore[no-untyped-def]
    return http.post(f"{url}/invocations", data=body, headers={"content-type": media, **headers})


def test_ping_names_the_model_served(open_server, http, detector_dir):  # type: ignore[no-untyped-def]
    answer = http.get(f"{open_server}/ping")
    assert answer.status_code == 200
    assert answer.json() == {
        "status": "ok",
        "model_version": str(detector_dir),
        "backend": "lightgbm",
    }


def test_json_readings_get_the_engines_predictions_in_order(open_server, http, detector_dir):  # type: ignore[no-untyped-def]
    sent = readings("contract-a", 40) + readings("contract-b", 40, hot=True)
    body = orjson.dumps({"readings": sent})
    answer = invoke(http, open_server, body, "application/json; charset=utf-8")
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"] == "application/json"
    predictions = answer.json()["predictions"]
    assert [(p["device_id"], p["ts"]) for p in predictions] == [
        (r["device_id"], r["ts"]) for r in sent
    ]
    assert {p["model_version"] for p in predictions} == {str(detector_dir)}
    assert all(0.0 <= p["score"] <= 1.0 for p in predictions)
    # the same numbers as the engine itself, fresh, gives for the same readings
    model = load_serving_model(detector_dir, str(detector_dir))
    expected = ScoringEngine(model).score_columns(parse_readings(body, JSON)).predictions()
    assert [(p["score"], p["alarm"]) for p in predictions] == [(e.score, e.alarm) for e in expected]
    # hot readings score high and alarm, cool ones do not
    assert not any(p["alarm"] for p in predictions[:40])
    assert all(p["alarm"] for p in predictions[40 + 30 :])


def test_csv_in_csv_out_and_accept_may_ask_for_json(open_server, http):  # type: ignore[no-untyped-def]
    sent = readings("contract-csv", 5)
    table = "device_id,ts,temperature_c,site_id\n" + "".join(
        f"{r['device_id']},{r['ts']},{r['temperature_c']},site-1\n" for r in sent
    )
    answer = invoke(http, open_server, table.encode(), "text/csv")
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"] == "text/csv"
    rows = list(csv.DictReader(io.StringIO(answer.text)))
    assert [r["ts"] for r in rows] == [r["ts"] for r in sent]
    assert all(0.0 <= float(r["score"]) <= 1.0 and r["alarm"] in ("true", "false") for r in rows)

    later = readings("contract-csv-json", 2)
    table = "device_id,ts,temperature_c\n" + "".join(
        f"{r['device_id']},{r['ts']},21\n" for r in later
    )
    answer = invoke(http, open_server, table.encode(), "text/csv", accept="application/json")
    assert answer.headers["content-type"] == "application/json"
    assert len(answer.json()["predictions"]) == 2


@pytest.mark.parametrize(
    "media", ["application/jsonlines", "application/jsonl", "application/x-ndjson"]
)
def test_jsonlines_answer_one_line_per_line(open_server, http, media):  # type: ignore[no-untyped-def]
    sent = readings(f"contract-{media}", 7)
    body = b"".join(orjson.dumps(r) + b"\n" for r in sent)
    answer = invoke(http, open_server, body, media)
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"] == "application/jsonlines"
    lines = answer.content.splitlines()
    assert len(lines) == len(body.splitlines()) == 7
    assert [json.loads(line)["ts"] for line in lines] == [r["ts"] for r in sent]


def test_a_new_sagemaker_session_is_opened_on_request(open_server, http):  # type: ignore[no-untyped-def]
    body = orjson.dumps({"readings": readings("session-a", 2)})
    plain = invoke(http, open_server, body, JSON)
    assert "x-amzn-sagemaker-new-session-id" not in plain.headers
    opened = invoke(http, open_server, body, JSON, **{"X-Amzn-SageMaker-Session-Id": "NEW_SESSION"})
    assert opened.status_code == 200, opened.text
    # SageMaker's NewSessionResponseHeader pattern
    assert re.fullmatch(
        r"[a-zA-Z0-9](-*[a-zA-Z0-9])*;\sExpires=\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ",
        opened.headers["x-amzn-sagemaker-new-session-id"],
    )
    again = invoke(http, open_server, body, JSON, **{"X-Amzn-SageMaker-Session-Id": "abc-1"})
    assert "x-amzn-sagemaker-new-session-id" not in again.headers


def test_execution_parameters_for_batch_transform(open_server, http):  # type: ignore[no-untyped-def]
    answer = http.get(f"{open_server}/execution-parameters")
    assert answer.json() == {
        "MaxConcurrentTransforms": 1,
        "BatchStrategy": "MultiRecord",
        "MaxPayloadInMB": 6,
    }


def test_the_served_document_is_the_committed_one(open_server, http):  # type: ignore[no-untyped-def]
    served = http.get(f"{open_server}/openapi.json").json()
    committed = json.loads(OPENAPI_PATH.read_text())
    assert served == committed == openapi_document(), (
        "regenerate it: firepipe serve --openapi docs/openapi/inference.json"
    )
    body = committed["paths"]["/invocations"]["post"]["requestBody"]["content"]
    assert set(body) == {"application/json", "application/jsonlines", "text/csv"}


class SlowSource:
    """A folder source whose first load waits for `release`."""

    follows = False

    def __init__(self, folder: Path) -> None:
        self.inner, self.release = FolderSource(folder), threading.Event()
        self.description = self.inner.description

    def current(self) -> str:
        return self.inner.current()

    def load(self, version: str) -> ServingModel:
        assert self.release.wait(timeout=20)
        return self.inner.load(version)


def test_ping_is_503_until_the_model_is_loaded(detector_dir, http):  # type: ignore[no-untyped-def]
    source = SlowSource(detector_dir)
    with running(create_app(ModelHolder(source), Access(None, None))) as url:
        assert http.get(f"{url}/ping").status_code == 503
        body = orjson.dumps({"readings": readings("early", 1)})
        early = invoke(http, url, body, "application/json")
        assert early.status_code == 503
        assert early.headers["retry-after"] == "1"
        assert http.get(f"{url}/execution-parameters").status_code == 200
        source.release.set()
        for _ in range(500):
            if http.get(f"{url}/ping").status_code == 200:
                break
            threading.Event().wait(0.02)
        assert http.get(f"{url}/ping").status_code == 200
        assert invoke(http, url, body, "application/json").status_code == 200
