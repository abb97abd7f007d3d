"""Plain-text logs a client cannot forge (orderflow/logformat.py): what a handler's error or a client
carries into a log line is escaped; a traceback keeps its lines, indented under its record."""

from __future__ import annotations

import logging
import subprocess
import sys

from orderflow.logformat import SafeFormatter, escape, has_control

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


def test_the_services_log_through_the_safe_formatter() -> None:
    code = (
        "import logging; from orderflow.lifecycle import setup_logging; setup_logging('info'); "
        f"logging.getLogger('worker.outcome').warning('failed (%s)', {FORGED!r})"
    )
    err = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30).stderr
    assert err.count("\n") == 1 and not has_control(err.rstrip("\n"))
    assert "worker.outcome: failed (card declined\\r\\n2026" in err
