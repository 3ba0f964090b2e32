"""Log records made safe before any handler sees them: no token, no forged line.

A serving process logs what clients send (paths, file names, failure reasons). Every record,
from any logger (ours, Flask's, waitress's), has its tokens replaced by ``<token>`` and its
control characters escaped, so a reason holding a newline stays on its own line. A token is the
segment after ``/ks/<name>/`` or ``/cb/<name>/``, and anything shaped like a host token (26
base32 characters) or the admin token (43 URL-safe base64 characters) wherever a client put it.
"""

from __future__ import annotations

import logging
import re
from typing import Any

_TOKEN_SEGMENT = re.compile(r"(/(?:ks|cb)/[^/]*/)[^/.\s]+", re.IGNORECASE)
_TOKEN_SHAPED = re.compile(
    r"(?<![A-Za-z0-9_-])(?:[A-Za-z2-7]{26}|[A-Za-z0-9_-]{43})(?![A-Za-z0-9_-])"
)
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_CONTROL_BUT_NEWLINE = re.compile("[\x00-\x09\x0b-\x1f\x7f-\x9f\u2028\u2029]")


def redact_tokens(text: str) -> str:
    """``text`` with the token of every kickstart or callback path replaced by ``<token>``."""
    return _TOKEN_SHAPED.sub("<token>", _TOKEN_SEGMENT.sub(r"\1<token>", text))


def escape_controls(text: str, *, keep_newlines: bool = False) -> str:
    r"""``text`` with control characters written as escapes (``\n``, ``\x1b``, ``\u2028``)."""
    pattern = _CONTROL_BUT_NEWLINE if keep_newlines else _CONTROL
    return pattern.sub(lambda m: m.group().encode("unicode_escape").decode("ascii"), text)


def make_safe(record: logging.LogRecord) -> None:
    """Format the record's message now, redacted and escaped; tracebacks keep their lines."""
    try:
        message = record.getMessage()
    except Exception:  # a broken format string: logging reports it when a handler formats it
        return
    record.msg, record.args = escape_controls(redact_tokens(message)), None
    if record.exc_info and not record.exc_text:
        text = logging.Formatter().formatException(record.exc_info)
        record.exc_text = escape_controls(redact_tokens(text), keep_newlines=True)
    if record.stack_info:
        record.stack_info = escape_controls(redact_tokens(record.stack_info), keep_newlines=True)


class _SafeRecordFactory:
    """Wraps the process's record factory; every record it makes passes ``make_safe``."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    def __call__(self, *args: Any, **kwargs: Any) -> logging.LogRecord:
        record: logging.LogRecord = self.inner(*args, **kwargs)
        make_safe(record)
        return record


def protect_logs() -> None:
    """Make every log record of this process safe from now on (installing twice is a no-op)."""
    current = logging.getLogRecordFactory()
    if not isinstance(current, _SafeRecordFactory):
        logging.setLogRecordFactory(_SafeRecordFactory(current))
