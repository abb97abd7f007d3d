"""orderflow/auth.py in process: the key file's rules, who a bearer key is (in constant time), the
file reloaded as a Kubernetes Secret mount changes, and the ingest's settings around it. The HTTP
side (401/403/404, views, /metrics) is tests/ingest/test_identity.py, against a real ingest."""

from __future__ import annotations

import hmac
import json
import logging
import os
from pathlib import Path
from typing import Any

import pytest

from orderflow import auth
from orderflow.envsettings import ConfigError, load_settings


def entries(**keys: tuple[str, list[str]]) -> bytes:
    return json.dumps({"keys": [auth.entry(n, scopes, k) for n, (k, scopes) in keys.items()]}).encode()


def bearer(key: str) -> bytes:
    return b"Bearer " + key.encode()


def test_a_key_is_who_its_entry_says_and_nothing_else_is_anyone() -> None:
    shop, ops = auth.new_key(), auth.new_key()
    keys = auth.parse_keys(entries(shop=(shop, [auth.WRITE]), ops=(ops, [auth.ADMIN])), "f")
    who = keys.identify(bearer(shop))
    assert who is not None and who.name == "shop" and who.allows(auth.WRITE) and not who.allows(auth.READ)
    admin = keys.identify(b"bearer  " + ops.encode() + b" ")  # the scheme is case-insensitive
    assert admin is not None and admin.admin and admin.allows(auth.WRITE) and admin.allows(auth.READ)
    for wrong in (None, b"", shop.encode(), b"Basic " + shop.encode(), bearer(shop + "x"), bearer(shop[:-1]),
                  b"Bearer ", bearer("k\x00ey"), b"Bearer " + b"a" * 600):  # fmt: skip
        assert keys.identify(wrong) is None, wrong
    assert len(shop) > 40 and shop.startswith(auth.KEY_PREFIX)  # 256 bits, recognisable


def test_every_stored_hash_is_compared_whichever_matches(monkeypatch: pytest.MonkeyPatch) -> None:
    """The constant-time path: the check hashes the presented key and compares it with every
    stored hash through hmac.compare_digest, the first entry's key, the last's and a wrong one
    alike, so the time taken says nothing about which entry or which bytes came close."""
    keys = {f"k{i}": (auth.new_key(), [auth.WRITE]) for i in range(5)}
    keyset = auth.parse_keys(entries(**keys), "f")
    calls: list[tuple[bytes, bytes]] = []
    compare = hmac.compare_digest

    def counting(a: bytes, b: bytes) -> bool:
        calls.append((a, b))
        return compare(a, b)

    monkeypatch.setattr(hmac, "compare_digest", counting)  # what auth.py calls: hmac.compare_digest
    for key in (keys["k0"][0], keys["k4"][0], auth.new_key()):
        calls.clear()
        keyset.identify(bearer(key))
        assert len(calls) == 5 and all(len(a) == len(b) == 32 for a, b in calls)


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (b"", "not a key file"),
        (b"[1, 2]", "not a key file"),
        (b'{"keys": [{"name": "a", "scopes": ["admin"]}]}', "not a key file"),
        (b'{"keys": [], "extra": 1}', "not a key file"),
        (b'{"keys": []}', "no keys"),
        (entries(**{"bad name": ("k", ["admin"])}), "entry 1: name must be"),
        (entries(a=("k", ["orders:delete"])), "entry 1 ('a'): scopes must be some of orders:write, orders:read, admin (got: orders:delete)"),
        (entries(a=("k", [])), "(got: none)"),
        (json.dumps({"keys": [auth.entry("a", ["admin"], "k1"), auth.entry("a", ["admin"], "k2")]}).encode(), "entry 2 ('a'): name given twice"),
        (json.dumps({"keys": [auth.entry("a", ["admin"], "k1"), auth.entry("b", ["admin"], "k1")]}).encode(), "entry 2 ('b'): the same key as an earlier entry"),
    ],
)  # fmt: skip
def test_a_bad_key_file_is_named_with_every_problem(content: bytes, problem: str) -> None:
    with pytest.raises(auth.KeyFileError) as err:
        auth.parse_keys(content, "/etc/orderflow/api-keys.json")
    assert str(err.value).startswith("/etc/orderflow/api-keys.json: ") and problem in str(err.value)


def test_a_key_is_never_in_an_error() -> None:
    """A key pasted where its hash or a scope belongs is refused without being echoed."""
    key = auth.new_key()
    pasted = {"keys": [{"name": "shop", "scopes": [key], "sha256": key}]}
    with pytest.raises(auth.KeyFileError) as err:
        auth.parse_keys(json.dumps(pasted).encode(), "f")
    assert key not in str(err.value)
    assert "sha256 must be 64 lowercase hex digits" in str(err.value) and "(not a scope name)" in str(
        err.value
    )


def secret_mount(directory: Path, content: bytes) -> Path:
    """The file as a Kubernetes Secret volume holds it: api-keys.json -> ..data/api-keys.json,
    ..data -> a versioned directory, swapped by one rename (atomic_writer.go)."""
    version = directory / f"..v{len(list(directory.glob('..v*')))}"
    version.mkdir()
    (version / "api-keys.json").write_bytes(content)
    (directory / "..data_tmp").symlink_to(version.name)
    os.replace(directory / "..data_tmp", directory / "..data")
    path = directory / "api-keys.json"
    if not path.is_symlink():
        path.symlink_to("..data/api-keys.json")
    return path


def test_the_file_is_reloaded_when_a_secret_mount_swaps_it(tmp_path: Path, caplog: Any) -> None:
    """1. a new version (a symlink swap; the path's own mtime never changes) replaces the keys;
    2. a broken version keeps the last good keys and is logged once, however often it is read;
    3. the file gone is a broken version too; 4. a good one again is taken."""
    caplog.set_level(logging.INFO, "orderflow.auth")
    old, new, later = auth.new_key(), auth.new_key(), auth.new_key()
    path = secret_mount(tmp_path, entries(shop=(old, [auth.WRITE])))
    keyfile = auth.KeyFile(str(path), 0.1)
    assert not keyfile.check()  # unchanged
    secret_mount(tmp_path, entries(shop=(new, [auth.WRITE])))
    assert keyfile.check() and keyfile.keys.identify(bearer(new)) is not None
    assert keyfile.keys.identify(bearer(old)) is None
    secret_mount(tmp_path, b'{"keys": [{"name": "shop"')
    assert not any(keyfile.check() for _ in range(5))
    assert keyfile.keys.identify(bearer(new)) is not None
    assert caplog.text.count("API keys not reloaded, keeping the 1 keys in use") == 1
    (tmp_path / "..data").unlink()
    assert not keyfile.check() and not keyfile.check()
    assert caplog.text.count("cannot read") == 1 and keyfile.keys.identify(bearer(new)) is not None
    secret_mount(tmp_path, entries(shop=(later, [auth.WRITE]), ops=(old, [auth.ADMIN])))
    assert keyfile.check() and keyfile.reloads == 2
    assert "API keys reloaded: 2 keys (shop, ops)" in caplog.text
    assert not any(k in caplog.text for k in (old, new, later))


def test_the_ingest_never_runs_open_beyond_loopback_unless_told(tmp_path: Path) -> None:
    env = {"ORDERFLOW_HTTP_HOST": "0.0.0.0"}
    with pytest.raises(
        ConfigError, match=r"ORDERFLOW_API_KEYS_FILE is not set and ORDERFLOW_HTTP_HOST=0\.0\.0\.0"
    ):
        load_settings("ingest", env)
    assert load_settings("ingest", {**env, "ORDERFLOW_AUTH_OPEN": "true"}).api_keys_file is None
    assert load_settings("ingest", {"ORDERFLOW_HTTP_HOST": "127.0.0.1"}).auth_open is False
    assert load_settings("worker", env).http_host == "0.0.0.0"  # the worker serves no API
    path = tmp_path / "keys.json"
    path.write_bytes(entries(shop=(auth.new_key(), [auth.WRITE])))
    assert load_settings("ingest", {**env, "ORDERFLOW_API_KEYS_FILE": str(path)}).api_keys_file == str(path)


def test_a_bad_key_file_or_port_stops_the_ingest_at_start(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as err:
        load_settings(
            "ingest",
            {
                "ORDERFLOW_API_KEYS_FILE": str(tmp_path / "missing.json"),
                "ORDERFLOW_HTTP_PORT": "8080",
                "ORDERFLOW_METRICS_PORT": "8080",
            },
        )
    assert (
        f"ORDERFLOW_API_KEYS_FILE: {tmp_path}/missing.json: cannot read (No such file or directory)"
        in str(err.value)
    )
    assert "ORDERFLOW_METRICS_PORT must differ from ORDERFLOW_HTTP_PORT (8080)" in str(err.value)
