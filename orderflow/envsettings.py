"""Reading ORDERFLOW_* once at start-up into a frozen config.Settings: which variable sets which
field with which parser (orderflow/envvalues.py), the names that are gone, the checks across
settings, every bad value named at once (ConfigError), and the services' command line, which takes
no arguments, only these variables."""

from __future__ import annotations

import os
import socket
import sys
import textwrap
from collections.abc import Callable, Mapping, Sequence
from dataclasses import fields
from typing import Any

from orderflow import auth, natsauth
from orderflow.config import Service, Settings
from orderflow.envvalues import (
    boolean,
    choice,
    comma_list,
    nats_urls,
    number,
    parse_work,
    read_webhook_secret,
    task_types,
)
from orderflow.lifecycle import setup_logging

PREFIX = "ORDERFLOW_"
DEFAULT_HTTP_PORT: dict[str, int] = {"ingest": 8080, "worker": 9090, "cli": 0}


class ConfigError(Exception):
    """Raised with every bad setting at once; str() is the message to print."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("invalid configuration:\n" + "\n".join(f"  - {p}" for p in problems))
        self.problems = problems


# env suffix -> (field, parser)
_PARSERS: dict[str, tuple[str, Callable[[str], Any]]] = {
    "NATS_URL": ("nats_urls", nats_urls),
    "NATS_USER": ("nats_user", str),
    "NATS_PASSWORD": ("nats_password", str),
    "NATS_TOKEN": ("nats_token", str),
    "NATS_TLS_HOSTNAME": ("nats_tls_hostname", str),
    "CONNECT_TIMEOUT_S": ("connect_timeout_s", number(float, 0.1)),
    "NATS_DRAIN_TIMEOUT_S": ("nats_drain_timeout_s", number(float, 0.1, 600)),
    "STREAM_REPLICAS": ("stream_replicas", number(int, 1, 5)),
    "DUPLICATE_WINDOW_S": ("duplicate_window_s", number(float, 120)),
    "STREAM_MAX_MSGS": ("stream_max_msgs", number(int, -1)),
    "STREAM_MAX_BYTES": ("stream_max_bytes", number(int, -1)),
    "STORE_MAX_BYTES": ("store_max_bytes", number(int, -1)),
    "DLQ_MAX_AGE_S": ("dlq_max_age_s", number(float, 0)),
    "STATUS_TTL_S": ("status_ttl_s", number(float, 0)),
    "RUNS_MAX_AGE_S": ("runs_max_age_s", number(float, 0)),
    "HTTP_HOST": ("http_host", str),
    "HTTP_PORT": ("http_port", number(int, 0, 65535)),
    "LOG_LEVEL": ("log_level", choice("debug", "info", "warning", "error")),
    "LOG_FORMAT": ("log_format", choice("text", "json")),
    "HTTP_HEADER_TIMEOUT_S": ("http_header_timeout_s", number(float, 0.1, 600)),
    "HTTP_BODY_TIMEOUT_S": ("http_body_timeout_s", number(float, 0.1, 3600)),
    "HTTP_MAX_CONNECTIONS": ("http_max_connections", number(int, 1, 1_000_000)),
    "HTTP_MAX_HEAD_BYTES": ("http_max_head_bytes", number(int, 1024, 1024 * 1024)),
    "HTTP_MAX_HEADERS": ("http_max_headers", number(int, 1, 10_000)),
    "HTTP_MAX_URL_BYTES": ("http_max_url_bytes", number(int, 256, 1024 * 1024)),
    "METRICS_PORT": ("metrics_port", number(int, 0, 65535)),
    "API_KEYS_FILE": ("api_keys_file", str),
    "API_KEYS_RELOAD_S": ("api_keys_reload_s", number(float, 0.1, 3600)),
    "AUTH_OPEN": ("auth_open", boolean),
    "MODE": ("mode", choice("queued", "direct")),
    "RATE_LIMIT_RPS": ("rate_limit_rps", number(float, 0.1)),
    "PUBLISH_TIMEOUT_S": ("publish_timeout_s", number(float, 0.05, 60)),
    "MAX_INFLIGHT_PUBLISHES": ("max_inflight_publishes", number(int, 1)),
    "BATCH_MAX_ORDERS": ("batch_max_orders", number(int, 1, 1000)),
    "BATCH_MAX_BYTES": ("batch_max_bytes", number(int, 1024, 64 * 1024 * 1024)),
    "RETRY_AFTER_S": ("retry_after_s", number(int, 1, 3600)),
    "REFUSAL_LOG_INTERVAL_S": ("refusal_log_interval_s", number(float, 0.1, 3600)),
    "SHUTDOWN_DELAY_S": ("shutdown_delay_s", number(float, 0, 300)),
    "SHUTDOWN_TIMEOUT_S": ("shutdown_timeout_s", number(float, 0.1, 600)),
    "INGEST_PROCESSES": ("ingest_processes", number(int, 1, 256)),
    "MAX_WAITERS": ("max_waiters", number(int, 0, 1_000_000)),
    "BIND_WHEN_READY": ("bind_when_ready", boolean),
    "CONCURRENCY": ("concurrency", number(int, 1, 10_000)),
    "ACK_WAIT_S": ("ack_wait_s", number(float, 1, 86400)),
    "TASK_TIMEOUT_S": ("task_timeout_s", number(float, 0.01)),
    "DRAIN_TIMEOUT_S": ("drain_timeout_s", number(float, 1, 86400)),
    "MAX_DELIVER": ("max_deliver", number(int, 1, 1000)),
    "MAX_CRASHES": ("max_crashes", number(int, 1, 1000)),
    "MAX_DELIVERIES": ("max_deliveries", number(int, 2, 100_000)),
    "RETRY_BASE_S": ("retry_base_s", number(float, 0.01)),
    "RETRY_MAX_S": ("retry_max_s", number(float, 0.01)),
    "MAX_DELAY_S": ("max_delay_s", number(float, 1, 82800)),
    "FETCH_EXPIRY_S": ("fetch_expiry_s", number(float, 0.1, 30)),
    "MAX_ACK_PENDING": ("max_ack_pending", number(int, -1)),
    "CONSUMER_INFO_INTERVAL_S": ("consumer_info_interval_s", number(float, 0.1)),
    "PRIORITY": ("priority", choice("auto", "off")),
    "HANDLERS": ("handlers", comma_list),
    "WORKER_TYPES": ("worker_types", comma_list),
    "WORKER_ID": ("worker_id", str),
    "WORK_S": ("work_s", parse_work),
    "WORK_FAIL_RATE": ("work_fail_rate", number(float, 0, 1)),
    "WORK_CHECKPOINTS": ("work_checkpoints", boolean),
    "POD_NAME": ("pod_name", str),
    "POD_NAMESPACE": ("pod_namespace", str),
    "POD_DELETION_COST": ("pod_deletion_cost", choice("auto", "on", "off")),
    "POD_DELETION_COST_MIN_INTERVAL_S": ("pod_deletion_cost_min_interval_s", number(float, 0)),
    "POD_DEADLINE": ("pod_deadline", choice("auto", "on", "off")),
    "TERMINATION_LOG": ("termination_log", str),
    "CALLBACK_HOSTS": ("callback_hosts", comma_list),
    "CALLBACK_ALLOW_HTTP": ("callback_allow_http", boolean),
    "CALLBACK_ALLOW_PRIVATE": ("callback_allow_private", boolean),
    "CALLBACK_TIMEOUT_S": ("callback_timeout_s", number(float, 0.1, 60)),
    "CALLBACK_SECRET_FILE": ("callback_secret_file", str),
    "CALLBACK_SECRETS_DIR": ("callback_secrets_dir", str),
}
# TASK_TYPES is parsed after CONCURRENCY and TASK_TIMEOUT_S, whose values are its defaults.
# MAX_ATTEMPTS is MAX_DELIVER's clearer name (failed attempts, not deliveries); either works.
# The NATS file settings (natsauth.FILE_SETTINGS) are checked by natsauth.load.
# Settings that are gone, with what replaced them (named, not reported as a typo).
REMOVED = {
    "IDEMPOTENCY_TTL_S": "removed: an Idempotency-Key is remembered as long as its order's status "
    f"({PREFIX}STATUS_TTL_S)",
}
KNOWN = {*_PARSERS, *natsauth.FILE_SETTINGS, *REMOVED, "TASK_TYPES", "MAX_ATTEMPTS"}


def _auth_problems(values: dict[str, Any], defaults: dict[str, Any]) -> list[str]:
    """The ingest's identity settings: a key file that parses now (read again by the ingest, and
    re-read as it changes), or an open ingest that only loopback clients can reach unless told."""
    keys_file = values.get("api_keys_file")
    host = values.get("http_host", defaults["http_host"])
    problems: list[str] = []
    if keys_file:
        problem = auth.file_problem(keys_file)
        if problem:
            problems.append(f"{PREFIX}API_KEYS_FILE: {problem}")
    elif not values.get("auth_open") and not auth.is_loopback(host):
        problems.append(
            f"{PREFIX}API_KEYS_FILE is not set and {PREFIX}HTTP_HOST={host} is not a loopback address: "
            f"refusing to take orders from anyone without a key (mint one: orderflow keys new NAME; "
            f"or set {PREFIX}AUTH_OPEN=true to run open on purpose)"
        )
    metrics_port = values.get("metrics_port", defaults["metrics_port"])
    if metrics_port and metrics_port == values.get("http_port"):
        problems.append(f"{PREFIX}METRICS_PORT must differ from {PREFIX}HTTP_PORT ({metrics_port})")
    return problems


def _callback_secret(values: dict[str, Any], problems: list[str]) -> None:
    """The Standard Webhooks secret, `whsec_` + base64 of 24-64 bytes, read from its file; a
    problem names the file, never its content."""
    folder = values.get("callback_secrets_dir")
    if folder and not os.path.isdir(folder):
        problems.append(f"{PREFIX}CALLBACK_SECRETS_DIR={folder!r}: not a directory")
    path = values.get("callback_secret_file")
    if not path:
        return
    try:
        values["callback_secret"] = read_webhook_secret(path)
    except ValueError as exc:
        problems.append(f"{PREFIX}CALLBACK_SECRET_FILE={path!r}: {exc}")


def load_settings(service: Service, env: Mapping[str, str] | None = None) -> Settings:
    """Read ORDERFLOW_* once. Raises ConfigError listing every bad value."""
    env = os.environ if env is None else env
    values: dict[str, Any] = {"service": service, "http_port": DEFAULT_HTTP_PORT[service]}
    problems: list[str] = []
    for suffix, (name, parse) in _PARSERS.items():
        raw = env.get(PREFIX + suffix)
        if raw is None or raw == "":
            continue
        try:
            values[name] = parse(raw)
        except ValueError as exc:
            problems.append(f"{PREFIX}{suffix}={raw!r}: {exc}")
    defaults = {f.name: f.default for f in fields(Settings)}
    concurrency = values.get("concurrency", defaults["concurrency"])
    timeout_s = values.get("task_timeout_s", defaults["task_timeout_s"])
    try:
        values["task_types"] = task_types(env.get(PREFIX + "TASK_TYPES") or "default", concurrency, timeout_s)
    except ValueError as exc:
        problems.append(f"{PREFIX}TASK_TYPES={env.get(PREFIX + 'TASK_TYPES')!r}: {exc}")
    known_types = {t.name for t in values.get("task_types", ())}
    strangers = [t for t in values.get("worker_types", ()) if known_types and t not in known_types]
    if strangers:
        problems.append(
            f"{PREFIX}WORKER_TYPES names {', '.join(strangers)}, not in {PREFIX}TASK_TYPES "
            f"({', '.join(sorted(known_types))})"
        )
    raw_attempts = env.get(PREFIX + "MAX_ATTEMPTS")
    if raw_attempts:
        try:
            attempts = number(int, 1, 1000)(raw_attempts)
        except ValueError as exc:
            problems.append(f"{PREFIX}MAX_ATTEMPTS={raw_attempts!r}: {exc}")
        else:
            if "max_deliver" in values and values["max_deliver"] != attempts:
                problems.append(
                    f"{PREFIX}MAX_ATTEMPTS={attempts} and {PREFIX}MAX_DELIVER={values['max_deliver']} "
                    "disagree (they are one setting; give one)"
                )
            values["max_deliver"] = attempts
    unknown = sorted(k for k in env if k.startswith(PREFIX) and k[len(PREFIX) :] not in KNOWN)
    problems += [f"{k}: unknown setting (typo?)" for k in unknown]
    problems += [f"{PREFIX}{k}: {why}" for k, why in REMOVED.items() if env.get(PREFIX + k)]
    retry_base = values.get("retry_base_s", defaults["retry_base_s"])
    if values.get("retry_max_s", defaults["retry_max_s"]) < retry_base:
        problems.append(f"{PREFIX}RETRY_MAX_S must be >= {PREFIX}RETRY_BASE_S")
    natsauth.load(env, PREFIX, values, problems)
    _callback_secret(values, problems)
    if bool(values.get("nats_user")) != bool(values.get("nats_password")):
        problems.append(f"{PREFIX}NATS_USER and {PREFIX}NATS_PASSWORD go together")
    if service == "ingest":
        problems += _auth_problems(values, defaults)
    if problems:
        raise ConfigError(problems)
    values["kubernetes_service_host"] = env.get("KUBERNETES_SERVICE_HOST") or None
    values["kubeconfig"] = env.get("KUBECONFIG") or None
    values["prometheus_multiproc_dir"] = env.get("PROMETHEUS_MULTIPROC_DIR") or None
    if not values.get("worker_id"):
        values["worker_id"] = values.get("pod_name") or f"{socket.gethostname()}-{os.getpid()}"
    return Settings(**values)


def service_settings(service: Service, argv: Sequence[str] | None, about: str) -> Settings | int:
    """`python -m ingest|worker`: the service's settings, or its exit code when there is nothing to
    start: --help (0), any argument (2), a bad setting (2; each named on stderr). `argv` None: the
    process's own."""
    handled = _command_line(service, sys.argv[1:] if argv is None else argv, about)
    if handled is not None:
        return handled
    try:
        return load_settings(service)
    except ConfigError as exc:
        print(f"{service}: {exc}", file=sys.stderr)
        return 2


def start_service(service: Service, argv: Sequence[str] | None, about: str) -> Settings | int:
    """`python -m ingest|worker`'s first step: service_settings, with the logging they name set up
    when there is a service to start."""
    settings = service_settings(service, argv, about)
    if not isinstance(settings, int):
        setup_logging(settings.log_level, settings.log_format)
    return settings


def _command_line(service: Service, argv: Sequence[str], about: str) -> int | None:
    """The services take no arguments, only ORDERFLOW_* variables. The exit code when the command
    line was all there was to do (--help: the usage and every setting's name, 0; anything else: a
    message, 2), None to start the service."""
    if not argv:
        return None
    if list(argv) in (["-h"], ["--help"]):
        names = ", ".join(PREFIX + name for name in sorted(KNOWN))
        how = (
            "It takes no arguments: environment variables configure it, read once at start-up (a "
            'bad value is named and the process exits 2; the README\'s "Settings" says what each '
            "means):"
        )
        paragraphs = (f"usage: python -m {service}", about, how, names)
        print("\n\n".join(textwrap.fill(p, 88) for p in paragraphs))
        return 0
    print(
        f"{service}: takes no arguments, only ORDERFLOW_* variables (python -m {service} --help "
        f"lists them); got {' '.join(argv)!r}",
        file=sys.stderr,
    )
    return 2
