"""Who is at the console: an API key of the intake's key file (orderflow/auth.py), as a Bearer
header or, after the sign-in form, as a signed session cookie; and the CSRF token of every form.

Scopes: `orders:read` looks, `admin` acts (orderflow/auth.py's `admin` implies the rest). The
cookie carries the key's name, its scopes and an expiry, HMAC-SHA256-signed with a secret drawn at
start (a console restart signs everyone out; no secret in a setting). It is HttpOnly and
SameSite=Strict, Secure unless the console serves plain HTTP on loopback. A POST from a cookie
session must carry the form field `csrf`, an HMAC of the session: a page of another site can
neither read it nor forge it. A Bearer request carries no ambient credential and needs none.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time

from orderflow.auth import ADMIN, READ, Identity, KeyFile

COOKIE = "orderflow_console"
SESSION_S = 8 * 3600


class Signer:
    def __init__(self, secret: bytes | None = None) -> None:
        self._secret = secret or secrets.token_bytes(32)

    def _mac(self, data: bytes) -> str:
        return (
            base64.urlsafe_b64encode(hmac.new(self._secret, data, hashlib.sha256).digest())
            .decode()
            .rstrip("=")
        )

    def session(self, who: Identity, now: float | None = None) -> str:
        body = json.dumps(
            {"n": who.name, "s": sorted(who.scopes), "e": int((now or time.time()) + SESSION_S)}
        )
        data = base64.urlsafe_b64encode(body.encode()).decode().rstrip("=")
        return f"{data}.{self._mac(data.encode())}"

    def identity(self, cookie: str | None, now: float | None = None) -> Identity | None:
        if not cookie or len(cookie) > 2048 or "." not in cookie:
            return None
        data, mac = cookie.rsplit(".", 1)
        if not hmac.compare_digest(mac, self._mac(data.encode())):
            return None
        try:
            body = json.loads(base64.urlsafe_b64decode(data + "=" * (-len(data) % 4)))
        except ValueError:
            return None
        if body.get("e", 0) < (now or time.time()):
            return None
        return Identity(body.get("n"), frozenset(body.get("s") or ()))

    def csrf(self, cookie: str) -> str:
        return self._mac(b"csrf:" + cookie.encode())

    def csrf_ok(self, cookie: str, token: str | None) -> bool:
        return bool(token) and hmac.compare_digest(self.csrf(cookie), token or "")


def can_look(who: Identity | None) -> bool:
    return who is not None and who.allows(READ)


def can_act(who: Identity | None) -> bool:
    return who is not None and ADMIN in who.scopes


def from_key(keys: KeyFile, key: str) -> Identity | None:
    return keys.keys.identify(b"Bearer " + key.strip().encode()[:600])
