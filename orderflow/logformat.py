"""Plain-text log lines a client cannot forge or garble. A handler's error text, an order id from a
control message or an exception's message may carry what a client sent (a username with CR/LF,
ESC or a bidi override): written raw, a newline starts a fake log line, ESC drives the reader's
terminal, and U+202E reverses what follows. The formatter escapes every such character in the
message (`\\n`, `\\x1b`, `\\u202e`), and in a traceback every one but the line breaks, with each
traceback line indented: a line that starts at column 0 is always a record's own first line."""

from __future__ import annotations

import logging
import re

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
