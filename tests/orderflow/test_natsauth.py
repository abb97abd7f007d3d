"""The NATS settings that name files, checked at start-up; the redaction of NATS URLs; which
connection failures are final. In-process: the real-server side is test_nats_security.py."""

from __future__ import annotations

import logging
import ssl
from pathlib import Path

import nats.errors
import pytest
from nats_secure import Pki, new_seed

from orderflow import natsauth
from orderflow.envsettings import ConfigError, load_settings


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("nats://127.0.0.1:4222", "nats://127.0.0.1:4222"),
        ("nats://orderflow:s3cr3t@nats:4222", "nats://orderflow:***@nats:4222"),
        ("tls://a:b@n1:4222,tls://c:d@n2:4222", "tls://a:***@n1:4222,tls://c:***@n2:4222"),
        ("nats://t0k3n@nats:4222", "nats://***@nats:4222"),
        (
            "cannot reach NATS at nats://u:p%40ss@h:1 (refused)",
            "cannot reach NATS at nats://u:***@h:1 (refused)",
        ),
        ("no URL here: user@example.org", "no URL here: user@example.org"),
    ],
)
def test_redact_hides_passwords_and_tokens_in_urls(text: str, shown: str) -> None:
    assert natsauth.redact(text) == shown


def test_every_log_line_is_redacted(caplog: pytest.LogCaptureFixture) -> None:
    handler = logging.StreamHandler()
    handler.addFilter(natsauth.RedactingFilter())
    record = logging.LogRecord(
        "x", logging.WARNING, __file__, 1, "NATS at %s: %s", ("nats://u:pw@h:1", "x"), None
    )
    handler.filter(record)
    assert record.getMessage() == "NATS at nats://u:***@h:1: x"


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return Pki.make(tmp_path_factory.mktemp("pki"))


@pytest.mark.procs
def test_the_files_are_read_once_at_start_up(pki: Pki, tmp_path: Path) -> None:
    (tmp_path / "pw").write_text("s3cret\n")
    seed = tmp_path / "seed.nk"
    new_seed(seed)
    s = load_settings(
        "worker",
        {
            "ORDERFLOW_NATS_CA_FILE": pki.path("ca.crt"),
            "ORDERFLOW_NATS_CERT_FILE": pki.path("client.crt"),
            "ORDERFLOW_NATS_KEY_FILE": pki.path("client.key"),
            "ORDERFLOW_NATS_USER": "orderflow-worker",
            "ORDERFLOW_NATS_PASSWORD_FILE": str(tmp_path / "pw"),
        },
    )
    assert s.nats_password == "s3cret" and "s3cret" not in repr(s)
    options = s.nats_options()
    assert isinstance(options["tls"], ssl.SSLContext) and options["password"] == "s3cret"
    s = load_settings(
        "worker",
        {"ORDERFLOW_NATS_CA_FILE": pki.path("ca.crt"), "ORDERFLOW_NATS_TLS_HOSTNAME": "nats.nats.svc"},
    )
    assert s.nats_options()["tls_hostname"] == "nats.nats.svc" and "cert_file" not in repr(s.nats_options())
    s = load_settings("worker", {"ORDERFLOW_NATS_NKEY_SEED_FILE": str(seed)})
    assert s.nats_options()["nkeys_seed"] == str(seed) and "tls" not in s.nats_options()


@pytest.mark.procs
def test_a_missing_or_unusable_file_is_named_at_start_up(pki: Pki, tmp_path: Path) -> None:
    (tmp_path / "empty").write_text("")
    (tmp_path / "not-a-cert").write_text("hello")
    with pytest.raises(ConfigError) as err:
        load_settings(
            "ingest",
            {
                "ORDERFLOW_NATS_CA_FILE": str(tmp_path / "missing.crt"),
                "ORDERFLOW_NATS_CERT_FILE": pki.path("client.crt"),
                "ORDERFLOW_NATS_PASSWORD_FILE": str(tmp_path / "empty"),
                "ORDERFLOW_NATS_USER": "u",
                "ORDERFLOW_NATS_CREDS_FILE": str(tmp_path / "not-a-cert"),
                "ORDERFLOW_NATS_NKEY_SEED_FILE": str(tmp_path / "not-a-cert"),
            },
        )
    message = str(err.value)
    assert (
        f"ORDERFLOW_NATS_CA_FILE='{tmp_path / 'missing.crt'}': cannot read it (No such file or directory)"
        in message
    )
    assert "ORDERFLOW_NATS_CERT_FILE and ORDERFLOW_NATS_KEY_FILE go together" in message
    assert "ORDERFLOW_NATS_PASSWORD_FILE" in message and "the file is empty" in message
    assert "ORDERFLOW_NATS_CREDS_FILE" in message and "not a NATS creds file" in message
    assert "ORDERFLOW_NATS_NKEY_SEED_FILE" in message and "no user nkey seed" in message
    with pytest.raises(ConfigError, match="ORDERFLOW_NATS_CA_FILE: not a usable PEM"):
        load_settings("ingest", {"ORDERFLOW_NATS_CA_FILE": str(tmp_path / "not-a-cert")})
    with pytest.raises(
        ConfigError, match="ORDERFLOW_NATS_PASSWORD and ORDERFLOW_NATS_PASSWORD_FILE: give one"
    ):
        load_settings(
            "ingest",
            {
                "ORDERFLOW_NATS_USER": "u",
                "ORDERFLOW_NATS_PASSWORD": "p",
                "ORDERFLOW_NATS_PASSWORD_FILE": str(tmp_path / "not-a-cert"),
            },
        )
    new_seed(tmp_path / "seed.nk")
    with pytest.raises(ConfigError, match="one identity at a time, got token and nkey seed"):
        load_settings(
            "ingest",
            {"ORDERFLOW_NATS_TOKEN": "t", "ORDERFLOW_NATS_NKEY_SEED_FILE": str(tmp_path / "seed.nk")},
        )


def test_a_tls_or_credential_refusal_is_final_and_not_up_yet_is_retried() -> None:
    verify = ssl.SSLCertVerificationError(1, "certificate verify failed")
    verify.verify_message = "unable to get local issuer certificate"
    assert "not trusted" in (natsauth.access_problem(verify) or "")
    assert "refused our credentials" in (
        natsauth.access_problem(nats.errors.Error("nats: 'Authorization Violation'")) or ""
    )
    assert natsauth.access_problem(nats.errors.AuthorizationError()) is not None
    for transient in (
        ConnectionRefusedError(111, "refused"),
        TimeoutError(),
        nats.errors.NoServersError(),
        ssl.SSLEOFError(),
    ):
        assert natsauth.access_problem(transient) is None
