"""A nats-server as production runs it: TLS with client certificates (mTLS) and orderflow's account
with one user per service, their permissions read from the accounts snippet in
docs/kubernetes.md (so the documented snippet is the one the tests prove). Certificates are made
here with the `openssl` CLI, nkeys with the `nkeys` package (a runtime dependency); for creds
files, a second server in operator mode with JWTs issued here as `nsc` would."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import secrets
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nkeys
import yaml
from harness import REPO, find_binary

from orderflow_tools import kit

SNIPPET_START = "# nats-security-values.yaml"
PLACEHOLDERS = {
    "ingest": "INGEST_PUBLIC_NKEY",
    "worker": "WORKER_PUBLIC_NKEY",
    "cli": "CLI_PUBLIC_NKEY",
    "console": "CONSOLE_PUBLIC_NKEY",
}


def documented_values() -> dict[str, Any]:
    """The NATS Helm values snippet of docs/kubernetes.md, parsed."""
    text = (REPO / "docs" / "kubernetes.md").read_text()
    m = re.search(r"```yaml\n(" + re.escape(SNIPPET_START) + r".*?)```", text, re.S)
    assert m, f"docs/kubernetes.md has no ```yaml block starting with {SNIPPET_START!r}"
    values: dict[str, Any] = yaml.safe_load(m.group(1))
    return values


def documented_users() -> dict[str, dict[str, Any]]:
    """service -> its user entry (nkey placeholder and permissions) from the snippet."""
    users = documented_values()["config"]["merge"]["accounts"]["ORDERFLOW"]["users"]
    by_key = {u["nkey"]: u for u in users}
    return {service: by_key[placeholder] for service, placeholder in PLACEHOLDERS.items()}


def _openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True)


def _key_and_csr(d: Path, name: str, cn: str) -> None:
    _openssl(
        "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
        "-keyout", str(d / f"{name}.key"), "-out", str(d / f"{name}.csr"), "-subj", f"/CN={cn}",
    )  # fmt: skip


def _ca(d: Path, name: str) -> None:
    _openssl(
        "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days", "1",
        "-keyout", str(d / f"{name}.key"), "-out", str(d / f"{name}.crt"), "-subj", f"/CN={name}",
    )  # fmt: skip


def _sign(d: Path, name: str, ca: str, ext: str) -> None:
    (d / f"{name}.ext").write_text(ext)
    _openssl(
        "x509", "-req", "-in", str(d / f"{name}.csr"), "-CA", str(d / f"{ca}.crt"),
        "-CAkey", str(d / f"{ca}.key"), "-CAcreateserial", "-days", "1",
        "-extfile", str(d / f"{name}.ext"), "-out", str(d / f"{name}.crt"),
    )  # fmt: skip


@dataclass
class Pki:
    """ca (trusted by the server), server and client certificates signed by it, and other-ca, a CA
    nobody trusts (a client given it as its CA cannot verify the server)."""

    dir: Path

    @classmethod
    def make(cls, d: Path) -> Pki:
        d.mkdir(parents=True, exist_ok=True)
        _ca(d, "ca")
        _ca(d, "other-ca")
        _key_and_csr(d, "server", "localhost")
        _sign(d, "server", "ca", "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n")
        _key_and_csr(d, "client", "orderflow")
        _sign(d, "client", "ca", "extendedKeyUsage=clientAuth\n")
        return cls(d)

    def path(self, name: str) -> str:
        return str(self.dir / name)


def new_seed(path: Path) -> str:
    """A user nkey seed written to `path` (mode 0600); its public key."""
    seed = nkeys.encode_seed(os.urandom(32), nkeys.PREFIX_BYTE_USER)
    path.write_bytes(seed + b"\n")
    path.chmod(0o600)
    public: bytes = nkeys.from_seed(bytearray(seed)).public_key
    return public.decode()


@dataclass
class SecureNats:
    """nats-server with mTLS and the documented users; the ingest authenticates with a password
    file (user orderflow-ingest), the workers, the CLI and the console with nkey seed files."""

    dir: Path
    pki: Pki
    server: kit.NatsServer
    password: str
    seeds: dict[str, Path] = field(default_factory=dict)

    @classmethod
    def start(cls, d: Path) -> SecureNats:
        pki = Pki.make(d / "pki")
        users = documented_users()
        password = secrets.token_urlsafe(16)
        (d / "ingest.password").write_text(password + "\n")
        seeds = {s: d / f"{s}.nk" for s in ("worker", "cli", "console")}
        accounts_users: list[dict[str, Any]] = [
            {"user": "orderflow-ingest", "password": password, "permissions": users["ingest"]["permissions"]}
        ]
        accounts_users += [
            {"nkey": new_seed(path), "permissions": users[s]["permissions"]} for s, path in seeds.items()
        ]
        config = {
            # What config.nats.tls (+ merge) and tlsCA render in the official chart.
            "tls": {
                "cert_file": pki.path("server.crt"),
                "key_file": pki.path("server.key"),
                "ca_file": pki.path("ca.crt"),
                "verify": True,
                "timeout": 2,
            },
            "accounts": {"ORDERFLOW": {"jetstream": "enabled", "users": accounts_users}},
        }
        conf = d / "nats-server.conf"
        conf.write_text(json.dumps(config, indent=2))  # nats-server reads JSON as its config format
        server = kit.NatsServer(
            d / "jetstream",
            d / "nats-server.log",
            binary=find_binary("nats-server"),
            extra_args=["-c", str(conf)],
        )
        server.start()
        return cls(d, pki, server, password, seeds)

    @property
    def url(self) -> str:
        return f"tls://127.0.0.1:{self.server.port}"

    def tls(self, ca: str = "ca.crt") -> dict[str, str]:
        return {
            "NATS_CA_FILE": self.pki.path(ca),
            "NATS_CERT_FILE": self.pki.path("client.crt"),
            "NATS_KEY_FILE": self.pki.path("client.key"),
        }

    def identity(self, service: str) -> dict[str, str]:
        """ORDERFLOW_* settings (without the prefix) of a service's identity and TLS files."""
        if service == "ingest":
            auth = {"NATS_USER": "orderflow-ingest", "NATS_PASSWORD_FILE": str(self.dir / "ingest.password")}
        else:
            auth = {"NATS_NKEY_SEED_FILE": str(self.seeds[service])}
        return {**self.tls(), **auth}

    def violations(self, service: str | None = None) -> list[str]:
        """The server's permission violations; of one nkey identity's (worker, cli, console) only."""
        log = self.server.log_path
        assert log is not None
        # nats-server 2.10+: `... - "ORDERFLOW/user:<name>" - Publish Violation - Subject "<subject>"`
        lines = [line for line in log.read_text(errors="replace").splitlines() if " Violation - " in line]
        if service is None:
            return lines
        public = nkeys.from_seed(bytearray(self.seeds[service].read_bytes().strip())).public_key.decode()
        return [line for line in lines if public in line]

    def stop(self) -> None:
        self.server.stop()


# --- JWT auth (operator mode): creds files, and a revoked user ---------------------------------
def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _keypair(prefix: int) -> tuple[str, str, Any]:
    seed = nkeys.encode_seed(os.urandom(32), prefix)
    pair = nkeys.from_seed(bytearray(seed))
    return seed.decode(), pair.public_key.decode(), pair


def _jwt(issuer: Any, subject: str, name: str, nats: dict[str, Any], iat: int) -> str:
    """A NATS v2 JWT as `nsc` issues one: claims signed with the issuer's nkey (ed25519)."""
    claims: dict[str, Any] = {
        "iat": iat,
        "iss": issuer.public_key.decode(),
        "name": name,
        "sub": subject,
        "nats": {**nats, "version": 2},
    }
    claims["jti"] = base64.b32encode(hashlib.sha256(json.dumps(claims, sort_keys=True).encode()).digest())
    claims["jti"] = claims["jti"].decode().rstrip("=")
    head = _b64(json.dumps({"typ": "JWT", "alg": "ed25519-nkey"}).encode())
    body = _b64(json.dumps(claims).encode())
    return f"{head}.{body}.{_b64(issuer.sign(f'{head}.{body}'.encode()))}"


@dataclass
class JwtNats:
    """nats-server in operator mode (JWT auth, the accounts preloaded): `creds["user"]` is a valid
    user's creds file, `creds["revoked"]` one issued the same way whose user the account revoked."""

    server: kit.NatsServer
    creds: dict[str, Path]

    @classmethod
    def start(cls, d: Path) -> JwtNats:
        d.mkdir(parents=True, exist_ok=True)
        _, operator_pub, operator = _keypair(nkeys.PREFIX_BYTE_OPERATOR)
        _, account_pub, account = _keypair(nkeys.PREFIX_BYTE_ACCOUNT)
        _, system_pub, _ = _keypair(nkeys.PREFIX_BYTE_ACCOUNT)
        now = int(time.time())
        users = {name: _keypair(nkeys.PREFIX_BYTE_USER) for name in ("user", "revoked")}
        limits = {k: -1 for k in ("subs", "data", "payload", "imports", "exports", "conn", "leaf")}
        js_limits = {k: -1 for k in ("mem_storage", "disk_storage", "streams", "consumer")}
        revocations = {users["revoked"][1]: now + 1}  # every JWT of that user issued before now + 1 s
        creds = {}
        for name, (seed, public, _) in users.items():
            user = _jwt(account, public, name, {"type": "user", "pub": {}, "sub": {}, **limits}, now)
            path = d / f"{name}.creds"
            path.write_text(
                f"-----BEGIN NATS USER JWT-----\n{user}\n------END NATS USER JWT------\n\n"
                f"-----BEGIN USER NKEY SEED-----\n{seed}\n------END USER NKEY SEED------\n"
            )
            path.chmod(0o600)
            creds[name] = path
        config = {
            "operator": _jwt(
                operator, operator_pub, "op", {"type": "operator", "system_account": system_pub}, now
            ),
            "system_account": system_pub,
            "resolver": "MEMORY",
            "resolver_preload": {
                account_pub: _jwt(
                    operator,
                    account_pub,
                    "ORDERFLOW",
                    {"type": "account", "limits": {**limits, **js_limits}, "revocations": revocations},
                    now,
                ),
                system_pub: _jwt(operator, system_pub, "SYS", {"type": "account", "limits": limits}, now),
            },
        }
        (d / "nats-server.conf").write_text(json.dumps(config))
        server = kit.NatsServer(
            d / "jetstream",
            d / "nats-server.log",
            binary=find_binary("nats-server"),
            extra_args=["-c", str(d / "nats-server.conf")],
        )
        return cls(server.start(), creds)
