"""The bad-input corpus over a real ``fcn serve`` (uvicorn on a loopback port).

Every case gets its documented status with the JSON error body within 2 s, the server stays
healthy, and it never answers 500 (read from its own ``/metrics`` at the end).
"""

from __future__ import annotations

import io
import socket
import threading
import time
from pathlib import Path

import httpx
import pytest
from PIL import Image

from tests.service.http.conftest import start_server
from tests.service.reliability.conftest import count_500s, proc_status_kb, raw_request
from tests.service.reliability.corpus import HUGE_SIDE, encode, file_cases, random_image

LIMIT_S = 2.0
MAX_BODY = 2_000_000
BODY_TIMEOUT_S = 1.0
HEADER_TIMEOUT_S = 1.0
CASES = {case.name: case for case in file_cases()}
PNG = encode(random_image(40, 30, seed=11), "PNG")


@pytest.fixture(scope="module")
def server(conv_model, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("corpus")
    server = start_server(
        [
            "--model",
            f"conv={conv_model}",
            "--max-body-bytes",
            str(MAX_BODY),
            "--body-timeout-s",
            str(BODY_TIMEOUT_S),
            "--header-timeout-s",
            str(HEADER_TIMEOUT_S),
            "--no-access-log",
        ],
        tmp,
    )
    yield server
    assert count_500s(server.url) == 0, server.output()
    assert server.stop() == 0, server.output()


def check(response: httpx.Response, status: int, code: str | None, elapsed: float) -> None:
    assert elapsed < LIMIT_S, f"answered in {elapsed:.2f} s"
    assert response.status_code == status, response.text[:500]
    if code is not None:
        assert response.headers["content-type"] == "application/json"
        error = response.json()["error"]
        assert error["code"] == code and error["message"], error


def timed_post(url: str, **kwargs) -> tuple[httpx.Response, float]:
    start = time.perf_counter()
    response = httpx.post(url + "/v1/segment", timeout=10, **kwargs)
    return response, time.perf_counter() - start


def mask_size(response: httpx.Response) -> tuple[int, int]:
    with Image.open(io.BytesIO(response.content)) as image:
        return image.size


@pytest.mark.parametrize("how", ["raw", "multipart"])
@pytest.mark.parametrize("name", list(CASES))
def test_corpus_file_gets_its_documented_answer(server, name: str, how: str) -> None:
    case = CASES[name]
    if how == "raw":
        kwargs = {"content": case.data, "headers": {"content-type": "image/png"}}
    else:
        kwargs = {"files": {"image": (case.filename, case.data)}}
    response, elapsed = timed_post(server.url, **kwargs)
    check(response, case.status, case.code, elapsed)
    if case.size is not None:
        assert mask_size(response) == case.size


def test_a_header_claiming_60000x60000_is_refused_before_allocation(server) -> None:
    pid = server.process.pid
    httpx.post(server.url + "/v1/segment", files={"image": ("warm.png", PNG)}, timeout=10)
    rss, peak = proc_status_kb(pid, "VmRSS"), proc_status_kb(pid, "VmHWM")
    case = CASES["header-60000x60000"]
    for _ in range(5):
        response, elapsed = timed_post(
            server.url, content=case.data, headers={"content-type": "image/png"}
        )
        check(response, 413, "image_too_large", elapsed)
        assert f"{HUGE_SIDE}" in response.json()["error"]["message"] or "pixels" in response.text
    rise_mb = (proc_status_kb(pid, "VmRSS") - rss) / 1024
    peak_rise_mb = (proc_status_kb(pid, "VmHWM") - peak) / 1024
    assert rise_mb < 50 and peak_rise_mb < 50, (rise_mb, peak_rise_mb)


@pytest.mark.parametrize(
    "name, kwargs, status, code",
    [
        (
            "wrong-content-type",
            {"content": PNG, "headers": {"content-type": "text/plain"}},
            415,
            "unsupported_media_type",
        ),
        (
            "json-content-type",
            {"content": b'{"image": "x.png"}', "headers": {"content-type": "application/json"}},
            415,
            "unsupported_media_type",
        ),
        ("multipart-no-file", {"files": {"comment": (None, "hello")}}, 422, "missing_image"),
        ("multipart-image-as-text", {"files": {"image": (None, "cat.png")}}, 422, "missing_image"),
        (
            "multipart-two-files",
            {"files": [("image", ("a.png", PNG)), ("image", ("b.png", PNG))]},
            400,
            "bad_multipart",
        ),
        (
            "multipart-two-fields-with-files",
            {"files": [("image", ("a.png", PNG)), ("other", ("b.png", PNG))]},
            400,
            "bad_multipart",
        ),
        (
            "multipart-huge-text-field",
            {"files": {"image": ("a.png", PNG), "comment": (None, "x" * 1_500_000)}},
            400,
            "bad_multipart",
        ),
        (
            "multipart-without-boundary",
            {"content": b"--x\r\n\r\n", "headers": {"content-type": "multipart/form-data"}},
            400,
            "bad_multipart",
        ),
        (
            "multipart-redos-content-type",
            {
                "content": b"--a\r\n",
                "headers": {"content-type": 'multipart/form-data; boundary="' + "\\" * 8000 + "a"},
            },
            400,
            "bad_multipart",
        ),
        (
            "body-over-the-cap-declared",
            {"content": b"\x00" * (MAX_BODY + 1), "headers": {"content-type": "image/png"}},
            413,
            "body_too_large",
        ),
    ],
)
def test_protocol_case_gets_its_documented_answer(server, name, kwargs, status, code) -> None:
    response, elapsed = timed_post(server.url, **kwargs)
    check(response, status, code, elapsed)


def test_a_filename_with_dot_dot_is_never_used_as_a_path(server, tmp_path: Path) -> None:
    target = Path("/tmp/fcn-reliability-escape.png")
    target.unlink(missing_ok=True)
    name = "../../../../../../tmp/fcn-reliability-escape.png"
    response, elapsed = timed_post(server.url, files={"image": (name, PNG)})
    check(response, 200, None, elapsed)
    assert mask_size(response) == (40, 30)
    assert not target.exists()


@pytest.mark.parametrize("multipart", [False, True])
def test_a_chunked_body_over_the_cap_is_413(server, multipart: bool) -> None:
    def chunks():
        if multipart:
            yield b'--b\r\nContent-Disposition: form-data; name="image"; filename="a.png"\r\n\r\n'
        for _ in range(MAX_BODY // 65536 + 4):
            yield b"\x89PNG" + b"\x00" * 65532

    media = "multipart/form-data; boundary=b" if multipart else "image/png"
    response, elapsed = timed_post(server.url, content=chunks(), headers={"content-type": media})
    assert "content-length" not in response.request.headers
    check(response, 413, "body_too_large", elapsed)


def _stall(url: str, payload: bytes, hold: threading.Event, answers: list) -> None:
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(payload)
        start = time.perf_counter()
        data = b""
        try:
            while chunk := sock.recv(65536):
                data += chunk
        except (TimeoutError, ConnectionResetError):
            pass
        answers.append((data, time.perf_counter() - start))
        hold.set()


def _healthy_meanwhile(url: str) -> None:
    for _ in range(3):
        start = time.perf_counter()
        assert httpx.get(url + "/healthz", timeout=5).status_code == 200
        response = httpx.post(url + "/v1/segment", files={"image": ("a.png", PNG)}, timeout=5)
        assert response.status_code == 200
        assert time.perf_counter() - start < LIMIT_S


def test_slowloris_stalled_headers_are_cut_off_and_block_nobody(server) -> None:
    answers: list = []
    done = threading.Event()
    head = b"POST /v1/segment HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\n"  # no blank line
    threads = [
        threading.Thread(target=_stall, args=(server.url, head, done, answers)) for _ in range(8)
    ]
    for thread in threads:
        thread.start()
    _healthy_meanwhile(server.url)
    for thread in threads:
        thread.join(10)
    assert len(answers) == 8
    for data, seconds in answers:
        assert seconds < HEADER_TIMEOUT_S + LIMIT_S, seconds
        assert data == b"" or data.startswith(b"HTTP/1.1 408"), data[:200]


def test_slowloris_stalled_body_gets_408_and_blocks_nobody(server) -> None:
    answers: list = []
    done = threading.Event()
    head = (
        b"POST /v1/segment HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\n"
        b"Content-Length: 100000\r\n\r\n\x89PNG\r\n"
    )
    threads = [
        threading.Thread(target=_stall, args=(server.url, head, done, answers)) for _ in range(8)
    ]
    for thread in threads:
        thread.start()
    _healthy_meanwhile(server.url)
    for thread in threads:
        thread.join(10)
    assert len(answers) == 8
    for data, seconds in answers:
        assert seconds < BODY_TIMEOUT_S + LIMIT_S, seconds
        assert data.startswith(b"HTTP/1.1 408"), data[:200]
        assert b'"code":"body_timeout"' in data


def test_model_names_are_only_looked_up(server) -> None:
    for name in ("../conv", "/etc/passwd", "..%2F..%2Fetc%2Fpasswd", "conv.onnx", "CONV"):
        response, elapsed = timed_post(
            server.url, params={"model": name}, files={"image": ("a.png", PNG)}
        )
        check(response, 404, "unknown_model", elapsed)
        assert "loaded models: conv" in response.json()["error"]["message"]


def test_server_is_healthy_after_the_corpus(server) -> None:
    # Runs last in this module (pytest keeps file order): the corpus left nothing stuck.
    data, seconds = raw_request(
        server.url, b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    assert data.startswith(b"HTTP/1.1 200") and seconds < 1
    assert httpx.get(server.url + "/readyz", timeout=5).status_code == 200
    response = httpx.post(server.url + "/v1/segment", files={"image": ("a.png", PNG)}, timeout=5)
    assert response.status_code == 200 and mask_size(response) == (40, 30)
    assert count_500s(server.url) == 0
