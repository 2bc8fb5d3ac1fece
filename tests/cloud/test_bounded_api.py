"""What a client without a key can make the API do (issue #15): bodies are bounded before
they are read, failed authentications are rate limited, hostile input answers 4xx."""

from __future__ import annotations

import asyncio
import socket
import statistics
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest

from cloud.api.limits import FailureBuckets
from cloud.config import CloudSettings
from cloud.runtime import CloudRuntime
from tests.cloud.cloudproc import OPS_KEY, STAFF_KEY, CloudProcess, cloud_config
from tests.cloud.streams import NODE, STORE
from tests.servers import MosquittoBroker

HUNDRED_MB = 100 * 1024 * 1024
CHUNK = 64 * 1024


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


JSON_OPS = {**bearer(OPS_KEY), "Content-Type": "application/json"}


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


@pytest.fixture
def cloud_process(mosquitto_broker: MosquittoBroker, tmp_path: Path) -> Iterator[CloudProcess]:
    process = CloudProcess(
        tmp_path, cloud_config(mosquitto_broker.port, tmp_path, stores={STORE: [NODE]})
    )
    process.start()
    yield process
    process.kill()


class Upload(threading.Thread):
    """Sends up to 100 MB to POST /api/v1/stores without a key, from a plain socket, and
    records when the status line came back."""

    def __init__(self, port: int, *, chunked: bool) -> None:
        super().__init__(daemon=True)
        self.port = port
        self.chunked = chunked
        self.status_line = b""
        self.answered_after_s: float | None = None
        self.sent = 0

    def run(self) -> None:
        sock = socket.create_connection(("127.0.0.1", self.port), timeout=10)
        framing = (
            b"Transfer-Encoding: chunked\r\n"
            if self.chunked
            else f"Content-Length: {HUNDRED_MB}\r\n".encode()
        )
        head = (
            b"POST /api/v1/stores HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            + framing
            + b"\r\n"
        )
        started = time.monotonic()
        reader = threading.Thread(target=self._read, args=(sock, started), daemon=True)
        try:
            sock.sendall(head)
            reader.start()
            piece = b"[" + b"1," * (CHUNK // 2 - 1) + b"1"
            while self.sent < HUNDRED_MB and self.answered_after_s is None:
                data = f"{len(piece):x}\r\n".encode() + piece + b"\r\n" if self.chunked else piece
                sock.sendall(data)
                self.sent += len(piece)
        except OSError:
            pass  # the server closed the connection after its 413: expected
        reader.join(10)
        sock.close()

    def _read(self, sock: socket.socket, started: float) -> None:
        received = b""
        try:
            while b"\r\n" not in received:
                data = sock.recv(4096)
                if not data:
                    break
                received += data
        except OSError:
            pass
        self.answered_after_s = time.monotonic() - started
        self.status_line = received.split(b"\r\n", 1)[0]


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_a_100_mb_body_without_a_key_is_refused_at_once(
    cloud_process: CloudProcess, chunked: bool
) -> None:
    assert cloud_process.process is not None
    pid = cloud_process.process.pid
    with httpx.Client(base_url=cloud_process.url, timeout=5) as client:
        for _ in range(5):  # warm up the paths the probes take
            assert client.get("/healthz").status_code == 200
        rss_before = rss_bytes(pid)
        upload = Upload(cloud_process.api_port, chunked=chunked)
        upload.start()
        health_s: list[float] = []
        while upload.is_alive() or len(health_s) < 5:
            started = time.monotonic()
            assert client.get("/healthz").status_code == 200
            health_s.append(time.monotonic() - started)
            time.sleep(0.02)
        upload.join()
        rss_growth = rss_bytes(pid) - rss_before
    assert upload.status_line.startswith(b"HTTP/1.1 413"), upload.status_line
    assert upload.answered_after_s is not None
    assert upload.answered_after_s < 1.0
    assert upload.sent < HUNDRED_MB  # the server stopped it; the client did not finish
    assert rss_growth < 20 * 1024 * 1024, rss_growth
    # Every probe answered within 100 ms; the median says what a probe usually takes.
    assert max(health_s) < 0.1, (statistics.median(health_s), max(health_s))
    print(
        f"413 after {upload.answered_after_s * 1000:.1f} ms, {upload.sent / 2**20:.1f} MiB"
        f" sent, RSS +{rss_growth / 2**20:.1f} MiB, healthz median"
        f" {statistics.median(health_s) * 1000:.1f} ms max {max(health_s) * 1000:.1f} ms"
        f" ({len(health_s)} probes)"
    )


# --------------------------------------------------------------- in-process, real uvicorn


@pytest.fixture
async def cloud(mosquitto_broker: MosquittoBroker, tmp_path: Path) -> AsyncIterator[CloudRuntime]:
    config = cloud_config(mosquitto_broker.port, tmp_path, stores={STORE: [NODE]})
    config["api"]["max_body_bytes"] = 4096
    config["api"]["auth_failure_burst"] = 3
    config["api"]["auth_failure_refill_s"] = 60
    runtime = CloudRuntime(CloudSettings(**config))
    await runtime.start()
    yield runtime
    await runtime.stop()


def client_from(cloud: CloudRuntime, ip: str) -> httpx.AsyncClient:
    """A client whose connections come from `ip` (any 127.x.y.z is this host on Linux)."""
    return httpx.AsyncClient(
        base_url=f"http://127.0.0.1:{cloud.api_port}",
        transport=httpx.AsyncHTTPTransport(local_address=ip),
        timeout=10,
    )


async def test_the_body_limit_is_configurable_and_counts_streamed_bodies(
    cloud: CloudRuntime,
) -> None:
    async with client_from(cloud, "127.0.0.1") as http:
        small = b'{"id": "store-9", "nodes": []}'
        assert (
            await http.post("/api/v1/stores", content=small, headers=JSON_OPS)
        ).status_code == 201
        declared = await http.post("/api/v1/stores", content=b"x" * 4097, headers=JSON_OPS)
        assert declared.status_code == 413
        assert declared.json()["error"] == "body_too_large"

    # A declared length over the limit is refused from the headers alone, even where no
    # handler would read the body.
    assert (await asyncio.to_thread(declared_get, cloud.api_port, 4097)).startswith(b"HTTP/1.1 413")
    assert (await asyncio.to_thread(declared_get, cloud.api_port, 0)).startswith(b"HTTP/1.1 200")
    # No Content-Length: counted as it arrives. 5 KiB of an unfinished chunked body gets
    # its 413 without the client ending the body; 4 KiB (the limit) is read whole.
    assert (await asyncio.to_thread(chunked_post, cloud.api_port, 5, end=False)).startswith(
        b"HTTP/1.1 413"
    )
    assert (await asyncio.to_thread(chunked_post, cloud.api_port, 4, end=True)).startswith(
        b"HTTP/1.1 422"  # blank JSON, but read and parsed: not refused
    )
    async with client_from(cloud, "127.0.0.1") as http:
        assert (await http.get("/healthz")).status_code == 200


def declared_get(port: int, length: int) -> bytes:
    """GET /healthz declaring a body of `length` bytes and sending none of it."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(
            f"GET /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: {length}\r\n\r\n".encode()
        )
        return sock.recv(4096).split(b"\r\n", 1)[0]


def chunked_post(port: int, kib: int, *, end: bool) -> bytes:
    """POST /api/v1/stores with `kib` 1 KiB chunks; the status line of the answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(
            b"POST /api/v1/stores HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            + f"Authorization: Bearer {OPS_KEY}\r\nTransfer-Encoding: chunked\r\n\r\n".encode()
        )
        for _ in range(kib):
            sock.sendall(b"400\r\n" + b" " * 1024 + b"\r\n")
        if end:
            sock.sendall(b"0\r\n\r\n")
        return sock.recv(4096).split(b"\r\n", 1)[0]


async def test_auth_failures_are_limited_per_ip(cloud: CloudRuntime) -> None:
    async with (
        client_from(cloud, "127.0.0.2") as attacker,
        client_from(cloud, "127.0.0.3") as other,
    ):
        for attempt in range(3):
            wrong = await attacker.get("/api/v1/stores", headers=bearer(f"guess-{attempt}"))
            assert wrong.status_code == 401
        limited = await attacker.get("/api/v1/stores", headers=bearer("guess-3"))
        assert limited.status_code == 429
        assert 50 <= int(limited.headers["retry-after"]) <= 60
        # Even the right key waits: the bucket is checked before any key is.
        assert (await attacker.get("/api/v1/stores", headers=bearer(OPS_KEY))).status_code == 429
        # Missing keys and forged dashboard tokens count too (from another IP).
        assert (await other.get("/api/v1/stores")).status_code == 401
        assert (
            await other.get("/api/v1/dashboard/events", params={"token": "a.b"})
        ).status_code == 401
        assert (await other.get("/api/v1/stores", headers=bearer(OPS_KEY))).status_code == 200
        assert (await other.get("/api/v1/stores")).status_code == 401
        assert (await other.get("/api/v1/stores")).status_code == 429


async def test_auth_failures_are_limited_per_key(cloud: CloudRuntime) -> None:
    """One wrong key tried from many addresses runs out, too; other keys do not."""
    for attempt in range(3):
        async with client_from(cloud, f"127.0.1.{attempt + 1}") as http:
            assert (await http.get("/api/v1/stores", headers=bearer("leaked"))).status_code == 401
    async with client_from(cloud, "127.0.1.9") as http:
        limited = await http.get("/api/v1/stores", headers=bearer("leaked"))
        assert limited.status_code == 429
        assert "leaked" not in limited.text
        assert (await http.get("/api/v1/stores", headers=bearer(STAFF_KEY))).status_code == 200


BIG = str(2**64)
HOSTILE: list[tuple[str, str, int]] = [
    ("GET", f"/api/v1/dead-letters?before={BIG}", 422),
    ("GET", "/api/v1/dead-letters?before=-1", 422),
    ("GET", f"/api/v1/dead-letters?limit={BIG}", 422),
    ("GET", f"/api/v1/alerts?before={BIG}", 422),
    ("GET", f"/api/v1/alerts/{BIG}", 422),
    ("GET", "/api/v1/alerts/0", 422),
    ("POST", f"/api/v1/alerts/{BIG}/ack", 422),
    ("GET", "/api/v1/dashboard/events?token=%C3%A9", 401),
    ("GET", "/api/v1/dashboard/events?token=%C3%A9.%C3%A9", 401),
    ("GET", "/api/v1/dashboard/events?token=e30.%E2%82%AC", 401),
    ("GET", "/api/v1/stores/%00/nodes", 400),
    ("GET", f"/api/v1/stores/{STORE}/inventory?shelf=%00", 400),
    ("GET", "/api/v1/orders/a%00b", 400),
    ("GET", f"/api/v1/stores/{STORE}/lockers/kpis?until=0001-01-01T00:00:00Z", 422),
    (
        "GET",
        f"/api/v1/stores/{STORE}/lockers/kpis?since=0001-01-01T00:00:00%2B23:59"
        "&until=0001-01-02T00:00:00Z",
        422,
    ),
    ("GET", f"/api/v1/stores/{STORE}/lockers/kpis?since=2026-01-01T00:00:00", 422),
    (
        "GET",
        "/api/v1/availability?gtins=%D9%A1%D9%A2%D9%A3%D9%A4%D9%A5%D9%A6%D9%A7%D9%A8%D9%A9%D9%A0%D9%A1%D9%A2%D9%A3%D9%A4",
        422,
    ),
    ("GET", f"/api/v1/dashboard/history?store={STORE}&gtin=00000000000000&minutes=nan", 422),
    ("GET", f"/api/v1/dashboard/history?store={STORE}&gtin=00000000000000&minutes=inf", 422),
]


@pytest.mark.parametrize(("method", "path", "status"), HOSTILE, ids=[p for _, p, _ in HOSTILE])
async def test_hostile_input_answers_4xx(
    cloud: CloudRuntime, method: str, path: str, status: int
) -> None:
    async with client_from(cloud, "127.0.0.1") as http:
        response = await http.request(method, path, headers=bearer(OPS_KEY))
    assert response.status_code == status, response.text
    assert set(response.json()) == {"error", "detail"}


async def test_hostile_bodies_answer_4xx(cloud: CloudRuntime) -> None:
    async with client_from(cloud, "127.0.0.1") as http:
        for body in [
            b"[" * 4000,  # nesting: a recursion error would be a 500
            b'{"id": "\\u0000", "nodes": []}',
            b'{"id": "s", "nodes": ["\\ud800"]}',
            b"\xff\xfe",
            b'{"id": 1e999}',
        ]:
            response = await http.post(
                "/api/v1/stores",
                content=body,
                headers=JSON_OPS,
            )
            assert 400 <= response.status_code < 500, (body[:20], response.text)


def test_failure_buckets_refill_and_drop_idle_clients_first() -> None:
    now = [0.0]
    buckets = FailureBuckets(burst=2, refill_s=10, max_tracked=3, clock=lambda: now[0])
    assert not buckets.fail("a")
    assert buckets.fail("a")  # the second failure empties a burst of 2
    assert buckets.retry_after("a") == pytest.approx(10)
    now[0] = 5
    assert buckets.retry_after("a") == pytest.approx(5)
    buckets.fail("b")
    buckets.fail("c")
    now[0] = 30  # b and c are full again (idle); a has 2 tokens too by now
    buckets.fail("a")
    now[0] = 31
    buckets.fail("d")  # the table is full: the idle b and c go, a (in use) stays
    assert len(buckets) == 2
    assert buckets.evicted == 0
    assert buckets.retry_after("a") == 0  # one token left of two
    buckets.fail("a")
    assert buckets.retry_after("a") > 0
    buckets.fail("e")
    buckets.fail("f")  # full of buckets in use: the least recently failed (d) goes
    assert buckets.evicted == 1
    assert buckets.retry_after("a") > 0
