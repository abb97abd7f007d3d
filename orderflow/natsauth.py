"""NATS transport security and identity: the ORDERFLOW_NATS_* settings that name files (a CA, a
client certificate and key, a creds file, an nkey seed, a password or token file), checked once at
start-up; the options and SSLContext nats-py connects with; which connection failures are final
(a TLS or credential problem: no retry helps) and which mean "not up yet"; and the one redaction of
NATS URLs (`user:pass@`, `token@`) for every log line and error.

Secrets come from files (mounted from Kubernetes Secrets), never from env values: ORDERFLOW_NATS_
PASSWORD and _TOKEN remain only for where a file cannot be used, and are discouraged.

nats-py (2.16) facts: `tls=` is used only when the server's INFO says `tls_required` (or with
`tls_hostname`'s name checked instead of the URL's host); `user_credentials=` (a creds file: JWT and
nkey seed) and `nkeys_seed=` (a seed file) need the `nkeys` package; with endless reconnects
(`max_reconnect_attempts=-1`) its first connect never raises: each failure goes to `error_cb`.
"""

from __future__ import annotations

import logging
import re
import ssl
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from orderflow.config import Settings

# userinfo in a URL: `scheme://user:pass@` keeps the user, `scheme://token@` keeps nothing.
_USERINFO = re.compile(r"(?P<scheme>\b[a-zA-Z][a-zA-Z0-9+.-]*://)(?P<user>[^:@/\s]*)(?::[^@/\s]*)?@")


def redact(text: str) -> str:
    """`text` with every URL's credentials replaced: nats://u:secret@h -> nats://u:***@h,
    nats://token@h -> nats://***@h. For any text that may hold a URL: log lines, errors."""

    def hide(m: re.Match[str]) -> str:
        if ":" in m.group(0)[len(m["scheme"]) :]:
            return f"{m['scheme']}{m['user']}:***@"
        return f"{m['scheme']}***@"

    return _USERINFO.sub(hide, text)


def redact_urls(urls: Iterable[str]) -> str:
    """NATS URLs as one comma-separated string for a message, credentials hidden."""
    return ",".join(redact(u) for u in urls)


class RedactingFilter(logging.Filter):
    """Redacts URL credentials in every record (nats-py's own lines and exception texts too)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if "@" in message:
            record.msg, record.args = redact(message), None
        return True


def not_tls_eof_noise(record: logging.LogRecord) -> bool:
    """A filter for asyncio's logger: nats-py's protocol returns True from eof_received(), which
    asyncio ignores under TLS with a warning on every closed TLS connection (each close, a NATS
    restart): noise, not news."""
    return "eof_received()" not in record.getMessage()


# --- settings --------------------------------------------------------------------------------
# env suffix -> Settings field; every one names a file, read (or loaded) once at start-up.
FILE_SETTINGS: dict[str, str] = {
    "NATS_CA_FILE": "nats_ca_file",
    "NATS_CERT_FILE": "nats_cert_file",
    "NATS_KEY_FILE": "nats_key_file",
    "NATS_CREDS_FILE": "nats_creds_file",
    "NATS_NKEY_SEED_FILE": "nats_nkey_seed_file",
    "NATS_PASSWORD_FILE": "nats_password_file",
    "NATS_TOKEN_FILE": "nats_token_file",
}


def _read(path: str) -> str:
    try:
        return Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"cannot read it ({getattr(exc, 'strerror', None) or exc})") from None


def _creds(text: str) -> None:
    if "BEGIN NATS USER JWT" not in text or "BEGIN USER NKEY SEED" not in text:
        raise ValueError("not a NATS creds file (a user JWT and its nkey seed, as `nsc` writes them)")


def _any(text: str) -> None:
    pass


def _seed(text: str) -> None:
    if not any(line.strip().startswith("SU") for line in text.splitlines()):
        raise ValueError("holds no user nkey seed (a line starting with SU)")


def tls_context(ca_file: str | None, cert_file: str | None, key_file: str | None) -> ssl.SSLContext | None:
    """The client's SSLContext: the CA bundle (else the system's trust store) and, for mTLS, the
    client certificate and key. None when no TLS file is set (a tls:// URL or a server that
    requires TLS then gets nats-py's default context)."""
    if not (ca_file or cert_file):
        return None
    context = ssl.create_default_context(cafile=ca_file)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if cert_file:
        context.load_cert_chain(cert_file, key_file)
    return context


def load(env: Mapping[str, str], prefix: str, values: dict[str, Any], problems: list[str]) -> None:
    """Check the file settings into `values` (a password or token file's content is read into
    nats_password / nats_token), every problem into `problems`, named by its setting."""
    checks: dict[str, Callable[[str], None]] = {"NATS_CREDS_FILE": _creds, "NATS_NKEY_SEED_FILE": _seed}
    for suffix, name in FILE_SETTINGS.items():
        path = (env.get(prefix + suffix) or "").strip()
        if not path:
            continue
        try:
            text = _read(path)
            checks.get(suffix, _any)(text)
        except ValueError as exc:
            problems.append(f"{prefix}{suffix}={path!r}: {exc}")
            continue
        values[name] = path
        if suffix in ("NATS_PASSWORD_FILE", "NATS_TOKEN_FILE"):
            secret = text.strip()
            if not secret:
                problems.append(f"{prefix}{suffix}={path!r}: the file is empty")
            plain = suffix.removesuffix("_FILE")
            if env.get(prefix + plain):
                problems.append(f"{prefix}{plain} and {prefix}{suffix}: give one (the file)")
            values["nats_password" if plain == "NATS_PASSWORD" else "nats_token"] = secret
    set_ = {s for s in FILE_SETTINGS if FILE_SETTINGS[s] in values}
    if ("NATS_CERT_FILE" in set_) != ("NATS_KEY_FILE" in set_):
        problems.append(f"{prefix}NATS_CERT_FILE and {prefix}NATS_KEY_FILE go together (mTLS)")
    elif values.get("nats_ca_file") or values.get("nats_cert_file"):
        try:
            tls_context(values.get("nats_ca_file"), values.get("nats_cert_file"), values.get("nats_key_file"))
        except (ssl.SSLError, OSError) as exc:
            which = "NATS_CERT_FILE/_KEY_FILE" if "nats_cert_file" in values else "NATS_CA_FILE"
            problems.append(f"{prefix}{which}: not a usable PEM certificate/key ({exc})")
    identities = [
        label
        for label, present in (
            ("user/password", bool(values.get("nats_user"))),
            ("token", bool(values.get("nats_token"))),
            ("creds file", "nats_creds_file" in values),
            ("nkey seed", "nats_nkey_seed_file" in values),
        )
        if present
    ]
    if len(identities) > 1:
        problems.append(f"ORDERFLOW_NATS_*: one identity at a time, got {' and '.join(identities)}")


def connect_options(settings: Settings) -> dict[str, Any]:
    """nats-py's connect options for the servers, TLS and identity in `settings`."""
    opts: dict[str, Any] = {"servers": list(settings.nats_urls)}
    context = tls_context(settings.nats_ca_file, settings.nats_cert_file, settings.nats_key_file)
    if context is not None:
        opts["tls"] = context
    if settings.nats_tls_hostname:
        opts["tls_hostname"] = settings.nats_tls_hostname
    if settings.nats_user:
        opts["user"] = settings.nats_user
        opts["password"] = settings.nats_password
    if settings.nats_token:
        opts["token"] = settings.nats_token
    if settings.nats_creds_file:
        opts["user_credentials"] = settings.nats_creds_file
    if settings.nats_nkey_seed_file:
        opts["nkeys_seed"] = settings.nats_nkey_seed_file
    return opts


# --- failures --------------------------------------------------------------------------------
class NatsAccessError(Exception):
    """The server answered but refused us (TLS or credentials): final, retrying cannot help.
    str() names the server (redacted) and the reason; the services exit 2 with it."""


PLAINTEXT_SERVER = (
    "the server does not offer TLS, and ORDERFLOW_NATS_CA_FILE/_CERT_FILE ask for it: nothing secret was sent"
)
_AUTH_ERRORS = ("authorization violation", "authentication", "revoked", "expired", "user not found")


def access_problem(exc: BaseException) -> str | None:
    """Why `exc` is final (a TLS or credential refusal), or None for "not up yet" (refused,
    reset, timed out, no servers): those are retried."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"TLS: the server's certificate is not trusted ({exc.verify_message}); check ORDERFLOW_NATS_CA_FILE"
    if isinstance(exc, ssl.SSLError) and not isinstance(exc, ssl.SSLEOFError | ssl.SSLZeroReturnError):
        return (
            f"TLS handshake refused ({exc.reason or exc}); check ORDERFLOW_NATS_CA_FILE/_CERT_FILE/_KEY_FILE"
        )
    if str(exc) == PLAINTEXT_SERVER:
        return PLAINTEXT_SERVER
    text = str(exc).lower()
    if type(exc).__name__ == "AuthorizationError" or any(a in text for a in _AUTH_ERRORS):
        return f"the server refused our credentials ({redact(str(exc)) or type(exc).__name__}); check the NATS identity settings"
    return None
