"""Who may do what at the ingest: the bearer key of a request against the current key file
(orderflow/auth.py), or everyone when the ingest runs open. Refusals are 401 (no key, or not a
key of ours) and 403 (a key without the scope), with their `WWW-Authenticate` challenge
(RFC 6750), counted per status by the request metrics and logged as one summary line per interval
with the key's name, never the key."""

from __future__ import annotations

import logging

from ingest import responses
from orderflow.auth import OPEN, Identity, KeyFile
from orderflow.config import Settings
from orderflow.logsummary import SummaryLog

log = logging.getLogger(__name__)

Refusal = tuple[int, bytes]


class Access:
    def __init__(self, settings: Settings) -> None:
        path = settings.api_keys_file
        self.keyfile = KeyFile(path, settings.api_keys_reload_s) if path else None
        self._log = SummaryLog(log, "requests refused (401/403)", settings.refusal_log_interval_s)

    @property
    def open(self) -> bool:
        return self.keyfile is None

    def check(self, authorization: bytes | None, scope: str) -> Identity | Refusal:
        """The request's identity if it may use `scope`, else the refusal to answer."""
        if self.keyfile is None:
            return OPEN
        identity = self.keyfile.keys.identify(authorization)
        if identity is None:
            self._log.note("401: no API key" if not authorization else "401: not a valid API key")
            return (401, responses.NO_KEY) if not authorization else (401, responses.BAD_KEY_401)
        if not identity.allows(scope):
            self._log.note(f"403: key {identity.name!r} lacks {scope}")
            return 403, responses.MISSING_SCOPE[scope]
        return identity
