"""Plain-text log lines a client cannot forge or garble. A handler's error text, an order id from a
control message or an exception's message may carry what a client sent (a username with CR/LF,
ESC or a bidi override): written raw, a newline starts a fake log line, ESC drives the reader's
terminal, and U+202E reverses what follows. The formatter escapes every such character in the
message (`\\n`, `\\x1b`, `\\u202e`), and in a traceback every one but the line breaks, with each
traceback line indented: a line that starts at column 0 is always a record's own first line."""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable
from contextvars import ContextVar

# C0 and C1 controls (DEL with them), the line and paragraph separators, and the bidi controls
# (marks, embeddings, overrides, isolates): what reorders, hides or breaks a line of text.
_OTHERS = "\x7f-\x9f\u061c\u200e\u200f\u2028-\u202e\u2066-\u2069"
CONTROLS = "\x00-\x1f" + _OTHERS  # a regex character class's inside
_CONTROL_RE = re.compile(f"[{CONTROLS}]")
_CONTROL_BUT_NEWLINE_RE = re.compile("[\x00-\x09\x0b-\x1f" + _OTHERS + "]")
_SHORT = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape_one(match: re.Match[str]) -> str:
    char = match.group()
    short = _SHORT.get(char)
    if short is not None:
        return short
    code = ord(char)
    return f"\\x{code:02x}" if code <= 0xFF else f"\\u{code:04x}"


def escape(text: str) -> str:
    """`text` with every control and bidi character written as an escape."""
    return _CONTROL_RE.sub(_escape_one, text)


def has_control(text: str) -> bool:
    return _CONTROL_RE.search(text) is not None


class SafeFormatter(logging.Formatter):
    def formatMessage(self, record: logging.LogRecord) -> str:
        record.message = escape(record.message)
        return super().formatMessage(record)

    def formatException(self, ei: logging._SysExcInfoType) -> str:
        return _block(super().formatException(ei))

    def formatStack(self, stack_info: str) -> str:
        return _block(super().formatStack(stack_info))


def _block(text: str) -> str:
    """A traceback: its lines kept, every other control escaped, each line indented."""
    text = _CONTROL_BUT_NEWLINE_RE.sub(_escape_one, text)
    return "\n".join("  " + line for line in text.split("\n"))


# The order a log line is about: set by the worker for the run in the task that runs it
# (worker/hooks.py LogContext), read by the JSON formatter.
ORDER_ID: ContextVar[str | None] = ContextVar("orderflow_order_id", default=None)
# (trace id, span id) of the current span, when tracing is on (orderflow/otel.py sets it): the
# formatter never imports OpenTelemetry itself.
current_trace: Callable[[], tuple[str, str] | None] | None = None


class JsonFormatter(logging.Formatter):
    """ORDERFLOW_LOG_FORMAT=json: one JSON object a line, with `order_id`, `trace_id` and `span_id`
    when known, so a line leads to the order's trace. json.dumps with ensure_ascii writes every
    control and non-ASCII character as an escape (`\\n`, `\\u001b`, `\\u202e`): a client's text
    cannot break a line or drive a terminal here either."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, object] = {
            "time": self.formatTime(record),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        order_id = ORDER_ID.get()
        if order_id is not None:
            line["order_id"] = order_id
        ids = current_trace() if current_trace is not None else None
        if ids is not None:
            line["trace_id"], line["span_id"] = ids
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            line["stack"] = self.formatStack(record.stack_info)
        return json.dumps(line, ensure_ascii=True)
