"""API keys at the intake: the key file, who a bearer key is, and the file reloaded as it changes.

The file (`ORDERFLOW_API_KEYS_FILE`, a mounted Secret) is JSON:

    {"keys": [{"name": "shop", "scopes": ["orders:write", "orders:read"], "sha256": "<64 hex>"}]}

Only the SHA-256 of each key is stored. A key is 32 random bytes from the kernel's CSPRNG
(`orderflow keys new` mints one), so it cannot be guessed or brute-forced from its hash: a slow
KDF (bcrypt, scrypt, argon2) protects *low-entropy* passwords, and would cost every request
milliseconds for nothing here. A presented key is hashed once and compared with every stored hash
with `hmac.compare_digest`, all of them, whichever matches: the time taken says nothing about
which bytes or which entry came close.

Scopes: `orders:write` (POST /orders), `orders:read` (GET /orders/{id} of the key's own orders, a
client's view of them), `admin` (every order, the full record; implies the other two). No key and
no error message ever carries a key: names and hashes' positions only.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import re
import secrets
from collections.abc import Iterable
from dataclasses import dataclass

import msgspec

log = logging.getLogger(__name__)

WRITE, READ, ADMIN = "orders:write", "orders:read", "admin"
SCOPES = (WRITE, READ, ADMIN)
KEY_PREFIX = "of_"  # so a leaked key is recognisable (secret scanners, logs)
MAX_FILE_BYTES = 1024 * 1024
# A key name travels as a NATS header and in status records: a short, plain token.
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:@-]{0,63}\Z")
_SCOPE_LIKE = re.compile(r"^[a-z]{1,16}(?::[a-z]{1,16})?\Z")
_HASH_RE = re.compile(r"^[0-9a-f]{64}\Z")
# RFC 6750 b64token, bounded: anything else in the header is no key of ours.
_TOKEN_RE = re.compile(rb"^[A-Za-z0-9._~+/=-]{1,512}\Z")


class KeyFileError(Exception):
    """The key file cannot be used; str() names the file and every problem, never a key."""


@dataclass(frozen=True)
class Identity:
    """Who a request is: the key's name and scopes. `name` is None only when auth is off."""

    name: str | None
    scopes: frozenset[str]
    # the key's default callback_url (an order without one of its own gets it), and the name of
    # its webhook secret: a file of that name in the workers' ORDERFLOW_CALLBACK_SECRETS_DIR
    callback_url: str | None = None
    webhook_secret: str | None = None

    def allows(self, scope: str) -> bool:
        return scope in self.scopes or ADMIN in self.scopes

    @property
    def admin(self) -> bool:
        return ADMIN in self.scopes


# Auth off (a loopback dev stack, or ORDERFLOW_AUTH_OPEN): every request may do everything.
OPEN = Identity(None, frozenset(SCOPES))


class _Entry(msgspec.Struct, forbid_unknown_fields=True):
    name: str
    scopes: list[str]
    sha256: str
    callback_url: str | None = None
    webhook_secret: str | None = None


class _File(msgspec.Struct, forbid_unknown_fields=True):
    keys: list[_Entry]


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def new_key() -> str:
    """A fresh key: 256 bits from the kernel's CSPRNG, URL-safe."""
    return KEY_PREFIX + secrets.token_urlsafe(32)


def entry(name: str, scopes: Iterable[str], key: str) -> dict[str, object]:
    """The file entry for a key (what `orderflow keys new` prints)."""
    return {"name": name, "scopes": sorted(set(scopes)), "sha256": hash_key(key)}


class KeySet:
    """The keys of one version of the file: who a presented key is, in constant time."""

    def __init__(self, entries: list[tuple[bytes, Identity]]) -> None:
        self._entries = entries

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def names(self) -> list[str]:
        return [i.name or "" for _, i in self._entries]

    def identify(self, authorization: bytes | None) -> Identity | None:
        """The identity of an `Authorization: Bearer KEY` header value, or None (no key, not a
        bearer key, or no such key). Every stored hash is compared, whichever matches."""
        if not authorization or authorization[:7].lower() != b"bearer ":
            return None
        token = authorization[7:].strip()
        if not _TOKEN_RE.match(token):
            return None
        digest = hashlib.sha256(token).digest()
        found: Identity | None = None
        for stored, identity in self._entries:
            if hmac.compare_digest(digest, stored) and found is None:
                found = identity
        return found


def parse_keys(data: bytes, source: str) -> KeySet:
    """A key file's content as a KeySet; KeyFileError naming every problem (by entry and name)."""
    try:
        parsed = msgspec.json.decode(data, type=_File)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise KeyFileError(
            f'{source}: not a key file ({exc}); expected {{"keys": [{{"name", "scopes", "sha256"}}]}}'
        ) from None
    problems: list[str] = []
    entries: list[tuple[bytes, Identity]] = []
    names: set[str] = set()
    hashes: set[str] = set()
    for n, e in enumerate(parsed.keys, 1):
        where = f"entry {n} ({e.name!r})" if _NAME_RE.match(e.name) else f"entry {n}"
        if not _NAME_RE.match(e.name):
            problems.append(f"{where}: name must be 1-64 of letters, digits, '_.:@-'")
        elif e.name in names:
            problems.append(f"{where}: name given twice")
        names.add(e.name)
        unknown = sorted(set(e.scopes) - set(SCOPES))
        if unknown or not e.scopes:
            # Echo a bad scope only when it looks like one: a key pasted there stays out of the log.
            shown = ", ".join(u if _SCOPE_LIKE.match(u) else "(not a scope name)" for u in unknown)
            problems.append(f"{where}: scopes must be some of {', '.join(SCOPES)} (got: {shown or 'none'})")
        if not _HASH_RE.match(e.sha256):
            problems.append(f"{where}: sha256 must be 64 lowercase hex digits (the key's hash, not the key)")
        elif e.sha256 in hashes:
            problems.append(f"{where}: the same key as an earlier entry")
        hashes.add(e.sha256)
        if e.callback_url is not None and not 0 < len(e.callback_url) <= 2048:
            problems.append(f"{where}: callback_url must be a URL of 1-2048 characters")
        if e.webhook_secret is not None and not _NAME_RE.match(e.webhook_secret):
            problems.append(f"{where}: webhook_secret must name a file: 1-64 of letters, digits, '_.:@-'")
        if not problems:
            identity = Identity(e.name, frozenset(e.scopes), e.callback_url, e.webhook_secret)
            entries.append((bytes.fromhex(e.sha256), identity))
    if not parsed.keys:
        problems.append("no keys: every request would be refused")
    if problems:
        raise KeyFileError(f"{source}: " + "; ".join(problems))
    return KeySet(entries)


def _read(path: str) -> bytes:
    """The file's bytes (following symlinks: a Secret mount swaps `..data`), bounded."""
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise KeyFileError(f"{path}: cannot read ({exc.strerror or exc})") from None
    if len(data) > MAX_FILE_BYTES:
        raise KeyFileError(f"{path}: over {MAX_FILE_BYTES} bytes")
    return data


def read_keys(path: str) -> tuple[KeySet, bytes]:
    data = _read(path)
    return parse_keys(data, path), data


class KeyFile:
    """The current KeySet of a file, read again every `interval_s` and swapped when its content
    changed. Kubernetes updates a mounted Secret by swapping a symlink (`..data`), so the content
    is compared (its hash), not the mtime of the path. A bad version keeps the last good set and
    is logged once (each bad version once), never with a key in the line."""

    def __init__(self, path: str, interval_s: float) -> None:
        self.path = path
        self.interval_s = interval_s
        self.keys, data = read_keys(path)
        self._seen = hashlib.sha256(data).digest()
        self.reloads = 0

    def check(self) -> bool:
        """Read the file once; True when a new set is in place."""
        problem: KeyFileError | None = None
        try:
            data = _read(self.path)
        except KeyFileError as exc:  # a failure is a version too: logged once until it changes
            problem, data = exc, b"\0" + str(exc).encode()
        seen = hashlib.sha256(data).digest()
        if seen == self._seen:
            return False
        self._seen = seen
        try:
            if problem is not None:
                raise problem
            keys = parse_keys(data, self.path)
        except KeyFileError as exc:
            log.error("API keys not reloaded, keeping the %d keys in use: %s", len(self.keys), exc)
            return False
        self.keys = keys
        self.reloads += 1
        log.info("API keys reloaded: %d keys (%s)", len(keys), ", ".join(keys.names))
        return True

    async def watch(self) -> None:
        """Check the file every interval until cancelled."""
        while True:
            await asyncio.sleep(self.interval_s)
            await asyncio.to_thread(self.check)


def file_problem(path: str) -> str | None:
    """Why the file cannot be used at start-up, or None (the settings' check)."""
    try:
        read_keys(path)
    except KeyFileError as exc:
        return str(exc)
    return None


def is_loopback(host: str) -> bool:
    return host in ("localhost", "::1") or host.startswith("127.")
