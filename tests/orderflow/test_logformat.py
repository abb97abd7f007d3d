"""Plain-text logs a client cannot forge (orderflow/logformat.py): what a handler's error or a client
carries into a log line is escaped; a traceback keeps its lines, indented under its record."""

from __future__ import annotations

import json
import logging
import subprocess
import sys

import pytest

from orderflow.logformat import JsonFormatter, SafeFormatter, escape, has_control

FORGED = "card declined\r\n2026-01-01 00:00:00,000 INFO  worker: all good \x1b[2J\u202eevil\x00"


def test_escape_writes_every_control_and_bidi_character_as_an_escape() -> None:
    assert escape(FORGED) == (
        "card declined\\r\\n2026-01-01 00:00:00,000 INFO  worker: all good \\x1b[2J\\u202eevil\\x00"
    )
    assert not has_control(escape(FORGED)) and has_control(FORGED)
    assert escape("Maïa Максим 😀") == "Maïa Максим 😀"


def record(msg: str, *args: object, exc: BaseException | None = None) -> logging.LogRecord:
    info = (type(exc), exc, exc.__traceback__) if exc is not None else None
    return logging.LogRecord("worker.outcome", logging.WARNING, __file__, 1, msg, args, info)


def test_a_message_with_a_client_s_text_stays_one_line_with_no_control_character() -> None:
    line = SafeFormatter("%(levelname)s %(name)s: %(message)s").format(
        record("order %s attempt %d failed (%s)", "o-1", 1, FORGED)
    )
    assert "\n" not in line and not has_control(line)
    assert line.startswith("WARNING worker.outcome: order o-1 attempt 1 failed (card declined\\r\\n2026")


def test_a_traceback_keeps_its_lines_indented_and_its_message_escaped() -> None:
    try:
        raise RuntimeError(FORGED)
    except RuntimeError as exc:
        text = SafeFormatter("%(message)s").format(record("slot crashed", exc=exc))
    first, *rest = text.split("\n")
    assert first == "slot crashed" and rest
    assert all(line.startswith("  ") for line in rest)  # no forged line at column 0
    assert not has_control(text.replace("\n", ""))
    assert "  Traceback (most recent call last):" in rest


def a_service_logs_forged(*log_format: str) -> str:
    """What a process whose logging is set up as the services' (lifecycle.setup_logging, in
    `log_format` where one is given) writes to stderr for one warning about FORGED."""
    setup = ", ".join(repr(arg) for arg in ("info", *log_format))
    code = (
        f"import logging; from orderflow.lifecycle import setup_logging; setup_logging({setup}); "
        f"logging.getLogger('worker.outcome').warning('failed (%s)', {FORGED!r})"
    )
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30).stderr


@pytest.mark.procs
def test_the_services_log_through_the_safe_formatter() -> None:
    err = a_service_logs_forged()
    assert err.count("\n") == 1 and not has_control(err.rstrip("\n"))
    assert "worker.outcome: failed (card declined\\r\\n2026" in err


def test_json_lines_escape_what_a_client_sent_and_carry_the_order_and_its_trace() -> None:
    """ORDERFLOW_LOG_FORMAT=json: one object a line; a client's CR/LF, ESC, NUL and bidi override
    are escapes inside the JSON string; order_id, trace_id and span_id when known."""
    from orderflow import logformat

    line = JsonFormatter().format(record("order %s attempt %d failed (%s)", "o-1", 1, FORGED))
    assert "\n" not in line and not has_control(line)
    parsed = json.loads(line)
    assert parsed["message"] == f"order o-1 attempt 1 failed ({FORGED})"
    assert (parsed["level"], parsed["logger"]) == ("WARNING", "worker.outcome")
    assert not {"order_id", "trace_id", "span_id"} & set(parsed)  # nothing known: nothing made up

    token = logformat.ORDER_ID.set("o-1")
    logformat.current_trace = lambda: ("4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7")
    try:
        parsed = json.loads(JsonFormatter().format(record("done")))
    finally:
        logformat.ORDER_ID.reset(token)
        logformat.current_trace = None
    assert (parsed["order_id"], parsed["trace_id"], parsed["span_id"]) == (
        "o-1",
        "4bf92f3577b34da6a3ce929d0e0e4736",
        "00f067aa0ba902b7",
    )


def test_with_tracing_on_a_json_line_names_the_current_span_or_the_run_span_of_its_task() -> None:
    """The ingest's request runs inside its server span (current); a worker's run span is kept in a
    context variable of the job's task. Either way the line carries that span's ids."""
    from opentelemetry.sdk.trace import TracerProvider

    from orderflow import logformat, otel

    tracer = TracerProvider().get_tracer("t")
    try:
        logformat.current_trace = otel._current_ids
        with tracer.start_as_current_span("POST /orders") as span:
            parsed = json.loads(JsonFormatter().format(record("x")))
        ctx = span.get_span_context()
        assert (parsed["trace_id"], parsed["span_id"]) == (f"{ctx.trace_id:032x}", f"{ctx.span_id:016x}")
        run = tracer.start_span("process orders.default")
        token = otel.RUN_SPAN.set(run)
        parsed = json.loads(JsonFormatter().format(record("x")))
        otel.RUN_SPAN.reset(token)
        assert parsed["span_id"] == f"{run.get_span_context().span_id:016x}"
        assert "trace_id" not in json.loads(JsonFormatter().format(record("x")))  # no span: no ids
    finally:
        logformat.current_trace = None


@pytest.mark.procs
def test_the_services_can_log_json_lines() -> None:
    err = a_service_logs_forged("json")
    assert err.count("\n") == 1 and json.loads(err)["message"] == f"failed ({FORGED})"
