"""One trace per order across the ingest and every run on every worker (issue #23), against real
processes: nats-server, `python -m ingest` and `python -m worker` with the `otel` extra switched on
by the standard variables, real SIGTERM and SIGKILL, and an OTLP/HTTP receiver in the test that
decodes the real protobuf (opentelemetry-proto's ExportTraceServiceRequest) the SDK sends."""

from __future__ import annotations

import json
import signal
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from harness import (
    NatsServer,
    Service,
    cli,
    http,
    read_stream,
    records_of,
    run,
    service_env,
    status_of,
    wait_until,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue

from orderflow import contract

pytestmark = pytest.mark.slow

CLIENT_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CLIENT_SPAN = "00f067aa0ba902b7"


def _value(v: AnyValue) -> Any:
    kind = v.WhichOneof("value")
    return getattr(v, kind) if kind else None


@dataclass
class Span:
    service: str
    instance: str
    trace_id: str
    span_id: str
    parent_id: str
    name: str
    kind: int
    attributes: dict[str, Any]
    events: list[tuple[str, dict[str, Any]]]


class Receiver(ThreadingHTTPServer):
    """POST /v1/traces: every span of every ExportTraceServiceRequest, with its resource."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.spans: list[Span] = []
        self.lock = threading.Lock()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def take(self, body: bytes) -> None:
        request = ExportTraceServiceRequest.FromString(body)
        for rs in request.resource_spans:
            resource = {a.key: _value(a.value) for a in rs.resource.attributes}
            for ss in rs.scope_spans:
                for s in ss.spans:
                    span = Span(
                        resource["service.name"],
                        resource["service.instance.id"],
                        s.trace_id.hex(),
                        s.span_id.hex(),
                        s.parent_span_id.hex(),
                        s.name,
                        s.kind,
                        {a.key: _value(a.value) for a in s.attributes},
                        [(e.name, {a.key: _value(a.value) for a in e.attributes}) for e in s.events],
                    )
                    with self.lock:
                        self.spans.append(span)

    def runs(self) -> list[Span]:
        with self.lock:
            return [s for s in self.spans if s.name.startswith("process ")]


class _Handler(BaseHTTPRequestHandler):
    server: Receiver

    def do_POST(self) -> None:
        assert self.path == "/v1/traces", self.path
        self.server.take(self.rfile.read(int(self.headers["Content-Length"])))
        body = ExportTraceServiceResponse().SerializeToString()
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def traced(tmp_path: Path, nats: NatsServer, module: str, endpoint: str, **settings: Any) -> Service:
    env = service_env(nats.url, **settings)
    env = {k: v for k, v in env.items() if not k.startswith("OTEL_")}
    env.update(
        OTEL_EXPORTER_OTLP_ENDPOINT=endpoint,  # on: the endpoint alone says so
        OTEL_TRACES_SAMPLER="parentbased_always_on",
        OTEL_BSP_SCHEDULE_DELAY="100",  # export within a tenth of a second, not 5 s
    )
    name = settings.get("WORKER_ID", module)
    return Service(module, env, tmp_path / f"{name}.log").start()


def exemplars_of(service: Service, metric: str) -> set[str]:
    """The trace ids on `metric`'s buckets in an OpenMetrics scrape (Prometheus's Accept)."""
    accept = "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5"
    status, headers, text = service.get("/metrics", {"Accept": accept})
    assert status == 200 and headers["content-type"].startswith("application/openmetrics-text"), headers
    lines = [line for line in text.decode().splitlines() if line.startswith(metric + "_bucket")]
    return {line.split('trace_id="', 1)[1].split('"', 1)[0] for line in lines if " # {" in line}


def wait_run_on(url: str, order_id: str, worker_id: str) -> None:
    """Until the order runs on `worker_id` with its lease AND the run's start record is stored: a
    SIGKILL between the two (a clean-clone run killed h2 there) leaves a run with no record, which
    the next run still finds as a crash, but which the timeline below cannot draw."""
    wait_until(
        lambda: (
            (st := status_of(url, order_id)) is not None
            and st.status == "processing"
            and st.worker_id == worker_id
            and any(r.worker_id == worker_id and r.event == "start" for r in records_of(url, order_id))
        ),
        30,
        f"{order_id} running on {worker_id} with its lease and its start record",
        0.1,
    )


@pytest.mark.timeout(180)
def test_an_order_handed_back_twice_and_crashed_once_is_one_trace(
    tmp_path: Path, nats_server: NatsServer, receiver: Receiver
) -> None:
    """1. An order comes in with the client's `traceparent`; a worker h0 runs it and is SIGTERMed
       with a 1 s drain budget (it hands the order back), then h1 the same; h2 runs it and is
       SIGKILLed; h3 finds the crash after ack_wait and finishes it.
    2. The receiver gets exactly one trace, the client's: one root, the ingest's `POST /orders`
       (server, child of the client's span) with its publish (producer) under it; one run span
       per run that ended, each on its own worker (service.instance.id) with its outcome: h0 and
       h1 `handed back` (the drain's hand-back notice and the checkpoint as events), h3 `done`
       with the crash of h2's run as an event with the time lost. h2's run, killed, never ends
       its span and sends none.
    3. `orderflow status ID --timeline --png` draws the four runs from ORDER_RUNS."""
    url = nats_server.url
    work = {"CONCURRENCY": 1, "WORK_S": "4", "DRAIN_TIMEOUT_S": 1, "ACK_WAIT_S": 2}
    procs: list[Service] = []
    try:
        ingest = traced(tmp_path, nats_server, "ingest", receiver.endpoint).wait_ready()
        procs.append(ingest)
        body = json.dumps({"product_id": "33", "count": "3", "username": "m"}).encode()
        headers = {"traceparent": f"00-{CLIENT_TRACE}-{CLIENT_SPAN}-01", "tracestate": "vendor=x"}
        status, _, answer = http("POST", ingest.url + "/orders", body, headers)
        assert status == 200, answer
        order_id = json.loads(answer)["order_id"]
        [stored] = run(read_stream(url, contract.STREAM))  # the order carries the producer's context
        assert stored.headers["traceparent"].startswith(f"00-{CLIENT_TRACE}-")
        assert stored.headers["tracestate"] == "vendor=x"
        for handing in ("h0", "h1"):  # handed back twice, each at its worker's drain
            worker = traced(tmp_path, nats_server, "worker", receiver.endpoint, WORKER_ID=handing, **work)
            procs.append(worker.wait_ready())
            wait_run_on(url, order_id, handing)
            worker.signal(signal.SIGTERM)
            assert worker.wait(30) == 0, worker.logs()[-3000:]
        h2 = traced(tmp_path, nats_server, "worker", receiver.endpoint, WORKER_ID="h2", **work).wait_ready()
        procs.append(h2)
        wait_run_on(url, order_id, "h2")
        h2.signal(signal.SIGKILL)
        h2.wait(10)
        h3 = traced(
            tmp_path, nats_server, "worker", receiver.endpoint, WORKER_ID="h3", LOG_FORMAT="json", **work
        ).wait_ready()
        procs.append(h3)
        wait_until(
            lambda: (st := status_of(url, order_id)) is not None and st.status == "done",
            60,
            "the order done",
            0.2,
        )
        wait_until(lambda: any(s.instance == "h3" for s in receiver.runs()), 10, "h3's run span", 0.1)
        # Scraped as OpenMetrics, the duration histograms carry the trace id as an exemplar.
        exemplars = {
            name: exemplars_of(service, metric)
            for name, service, metric in (
                ("ingest", ingest, "orderflow_http_request_duration_seconds"),
                ("h3", h3, "orderflow_task_duration_seconds"),
            )
        }
        assert exemplars == {"ingest": {CLIENT_TRACE}, "h3": {CLIENT_TRACE}}, exemplars
        status, headers, text = ingest.get("/metrics")  # the text format, without exemplars, by default
        assert headers["content-type"].startswith("text/plain") and b"trace_id" not in text
    finally:
        for p in procs:
            p.stop()

    starts = [r.worker_id for r in records_of(url, order_id) if r.event == "start"]
    assert starts == ["h0", "h1", "h2", "h3"], starts
    # The same story in the terminal: `orderflow status ID --timeline --png` draws its four runs.
    drawn = cli(url, "status", order_id, "--timeline", "--png", str(tmp_path / "runs.png"))
    assert drawn.returncode == 0, drawn.stderr
    header, *rows, wrote = drawn.stdout.splitlines()
    assert header.startswith(f"order {order_id}: 4 run(s) from "), drawn.stdout
    assert [(r.split()[0], r.split("s  ", 2)[-1].split("  ")[0].strip()) for r in rows] == [
        ("h0", "handed back"),
        ("h1", "handed back"),
        ("h2", "no end record"),
        ("h3", "done"),
    ], drawn.stdout
    assert "resumed from checkpoint" in rows[1] and wrote == f"wrote {tmp_path / 'runs.png'}"
    assert (tmp_path / "runs.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    spans = receiver.spans
    assert {s.trace_id for s in spans} == {CLIENT_TRACE}, "more than one trace"
    assert len(spans) == 2 + 3, [(s.name, s.instance) for s in spans]  # no span twice, none extra
    ids = {s.span_id for s in spans}
    [root] = [s for s in spans if s.parent_id not in ids]
    assert (root.name, root.service, root.parent_id) == ("POST /orders", "orderflow-ingest", CLIENT_SPAN)
    assert root.attributes["http.response.status_code"] == 200
    assert root.attributes["orderflow.order.id"] == order_id
    [producer] = [s for s in spans if s.name == "send orders.default"]
    assert producer.parent_id == root.span_id and producer.kind == 4  # SPAN_KIND_PRODUCER
    assert producer.attributes["messaging.system"] == "nats"
    assert producer.attributes["messaging.message.id"] == order_id
    assert producer.attributes["orderflow.published"] == "stored"
    assert stored.headers["traceparent"] == f"00-{CLIENT_TRACE}-{producer.span_id}-01"

    runs = {s.instance: s for s in receiver.runs()}
    assert sorted(runs) == ["h0", "h1", "h3"], [(s.instance, s.attributes) for s in receiver.runs()]
    for worker_id, s in runs.items():
        assert s.service == "orderflow-worker" and s.kind == 5  # SPAN_KIND_CONSUMER
        assert s.parent_id == producer.span_id
        assert s.attributes["orderflow.worker"] == worker_id
        assert s.attributes["messaging.message.id"] == order_id
        assert s.attributes["orderflow.failed_attempts"] == 0
    for delivery, worker_id in enumerate(("h0", "h1"), start=1):
        handed = runs[worker_id]
        assert handed.attributes["orderflow.outcome"] == "handed back"
        assert handed.attributes["messaging.message.delivery_count"] == delivery
        events = [name for name, _ in handed.events]
        assert "checkpoint" in events[events.index("hand-back notice") :], events  # the notice, then saved
        [notice] = [attrs for name, attrs in handed.events if name == "hand-back notice"]
        assert 0 <= notice["orderflow.hand_back_in_s"] <= 1, notice  # the 1 s drain budget
        assert "previous run crashed" not in events
    h3_run = runs["h3"]
    assert h3_run.attributes["orderflow.outcome"] == "done"
    assert h3_run.attributes["messaging.message.delivery_count"] == 4
    [crash] = [attrs for name, attrs in h3_run.events if name == "previous run crashed"]
    assert crash["orderflow.crashes"] == 1 and crash["orderflow.lost_s"] > 0, crash
    lines = [json.loads(line) for line in h3.logs().splitlines() if line.strip()]  # LOG_FORMAT=json
    assert any(f"order {order_id}: its previous run died" in line["message"] for line in lines)


def test_off_the_order_carries_no_trace_header_even_when_the_client_sends_one(
    tmp_path: Path, nats_server: NatsServer
) -> None:
    """Tracing off (no OTEL_* variables): the client's traceparent is not copied onto the order's
    message; its headers are what they are without tracing."""
    env = {k: v for k, v in service_env(nats_server.url).items() if not k.startswith("OTEL_")}
    ingest = Service("ingest", env, tmp_path / "ingest.log").start()
    try:
        ingest.wait_ready()
        body = json.dumps({"product_id": "33", "count": "3", "username": "m"}).encode()
        headers = {"traceparent": f"00-{CLIENT_TRACE}-{CLIENT_SPAN}-01"}
        status, _, answer = http("POST", ingest.url + "/orders", body, headers)
        assert status == 200, answer
    finally:
        ingest.stop()
    [stored] = run(read_stream(nats_server.url, contract.STREAM))
    assert set(stored.headers) == {contract.H_MSG_ID}, stored.headers


def test_a_batch_is_one_trace_every_order_of_it_under_its_publish(
    tmp_path: Path, nats_server: NatsServer, receiver: Receiver
) -> None:
    """POST /orders/batch with the client's context: its server span continues the client's trace;
    atomic, one producer span for the one atomic write (messaging.batch.message_count) and every
    stored order carries that span's context; pipelined, each order's publish is a producer span
    of its own under the request's, and each order carries its own. The runs of each order are the
    children of the context it carries (the test above)."""
    pipelined_trace = "5" * 32
    ingest = traced(tmp_path, nats_server, "ingest", receiver.endpoint).wait_ready()
    try:
        ids = {}
        for mode, trace_id, count in (("", CLIENT_TRACE, 3), ("?mode=pipelined", pipelined_trace, 2)):
            body = json.dumps(
                {"orders": [{"order": {"product_id": "1", "count": "1", "username": "m"}}] * count}
            )
            headers = {"traceparent": f"00-{trace_id}-{CLIENT_SPAN}-01"}
            status, _, answer = http("POST", ingest.url + "/orders/batch" + mode, body.encode(), headers)
            assert status == 200, answer
            ids[trace_id] = [item["order_id"] for item in json.loads(answer)["items"]]
        wait_until(lambda: len(receiver.spans) >= 2 + 3, 10, "the batches' spans", 0.1)
    finally:
        ingest.stop()
    carried = {
        m.headers[contract.H_MSG_ID]: m.headers["traceparent"]
        for m in run(read_stream(nats_server.url, contract.STREAM))
    }
    spans = receiver.spans
    for trace_id in (CLIENT_TRACE, pipelined_trace):
        [server] = [s for s in spans if s.trace_id == trace_id and s.name == "POST /orders/batch"]
        assert server.parent_id == CLIENT_SPAN and server.kind == 2  # SPAN_KIND_SERVER
        producers = [s for s in spans if s.trace_id == trace_id and s.name == "send orders.default"]
        assert all(p.parent_id == server.span_id and p.kind == 4 for p in producers)
        if trace_id == CLIENT_TRACE:  # atomic: one write, one span, its context on every order
            [producer] = producers
            assert producer.attributes["messaging.batch.message_count"] == 3
            assert producer.attributes["orderflow.published"] == "stored"
            assert {carried[i] for i in ids[trace_id]} == {f"00-{trace_id}-{producer.span_id}-01"}
        else:  # pipelined: one publish each
            assert sorted(p.attributes["messaging.message.id"] for p in producers) == sorted(ids[trace_id])
            for p in producers:
                assert carried[p.attributes["messaging.message.id"]] == f"00-{trace_id}-{p.span_id}-01"
