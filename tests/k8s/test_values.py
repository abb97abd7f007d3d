"""values.yaml is documented (helm-docs style, with README.md generated from it), typed by
values.schema.json with the services' own bounds, and every value is used.

The bounds of the ORDERFLOW_* maps live twice: values.schema.json (so `helm install` fails on a bad
value) and orderflow/envsettings.py's parsers (so the service fails at start-up). Each chart key maps to
its env name and the two must agree: type, minimum, maximum, choices.
"""

from __future__ import annotations

import inspect
import json
import re
from collections.abc import Callable, Iterator
from dataclasses import fields
from typing import Any

import pytest
import yaml
from chart_tools import CHART, PENDING_SETTINGS, Doc

from orderflow import envsettings
from orderflow.config import Settings
from orderflow.envsettings import load_settings
from scripts import chart_readme

SCHEMA: Doc = json.loads((CHART / "values.schema.json").read_text())
VALUES: Doc = yaml.safe_load((CHART / "values.yaml").read_text())
# The maps whose keys become ORDERFLOW_* env (lowerCamelCase of the env suffix).
ENV_MAPS = [("config",), ("ingest", "config"), ("worker", "config")]
# Other values that become one setting each.
ENV_VALUES = {("worker", "podDeletionCost", "minIntervalS"): "POD_DELETION_COST_MIN_INTERVAL_S"}


# --- documentation -----------------------------------------------------------------------------------------
def test_every_value_has_a_description() -> None:
    keys = chart_readme.parse_keys((CHART / "values.yaml").read_text())
    assert keys, "no keys parsed"
    assert chart_readme.problems(keys, VALUES) == []


def test_a_value_without_description_is_reported() -> None:
    text = "# A group.\ngroup:\n  # -- Documented.\n  a: 1\n  b: 2\n"
    keys = chart_readme.parse_keys(text)
    assert [".".join(k.path) for k in keys] == ["group", "group.a", "group.b"]
    assert chart_readme.problems(keys, yaml.safe_load(text)) == [
        "values.yaml:5: group.b has no `# --` description"
    ]


def test_keys_inside_a_list_default_are_data_not_values() -> None:
    text = "group:\n  # -- Peers.\n  peers:\n    - selector:\n        a: b\n      other: {}\n  # -- Next.\n  next: 1\n"
    keys = chart_readme.parse_keys(text)
    assert [".".join(k.path) for k in keys] == ["group", "group.peers", "group.next"]


def test_chart_readme_is_up_to_date(capsys: pytest.CaptureFixture[str]) -> None:
    assert chart_readme.main(["--check"]) == 0, capsys.readouterr().err


def test_readme_lists_every_documented_value_with_type_and_default() -> None:
    readme = (CHART / "README.md").read_text()
    rows = {
        line.split(" | ")[0].removeprefix("| "): line for line in readme.splitlines() if line.startswith("| ")
    }
    assert "| worker.config.drainTimeoutS | int | `60` |" in rows["worker.config.drainTimeoutS"]
    assert (
        "| worker.autoscaling.utilisation.target | float | `0.8` |"
        in rows["worker.autoscaling.utilisation.target"]
    )
    assert "| podSecurityContext | object | `{" in rows["podSecurityContext"]
    assert "worker.autoscaling" not in rows  # a group heading, not a value
    documented = [k for k in chart_readme.parse_keys((CHART / "values.yaml").read_text()) if k.description]
    assert {".".join(k.path) for k in documented} <= set(rows)


# --- schema --------------------------------------------------------------------------------------------------
def _values_paths(values: Any, prefix: str = "") -> Iterator[str]:
    if isinstance(values, dict):
        for key, sub in values.items():
            yield f"{prefix}{key}"
            yield from _values_paths(sub, f"{prefix}{key}.")


def _schema_paths(schema: Doc, prefix: str = "") -> Iterator[str]:
    for key, sub in schema.get("properties", {}).items():
        yield f"{prefix}{key}"
        yield from _schema_paths(sub, f"{prefix}{key}.")


def test_every_schema_key_has_a_default_in_values() -> None:
    schema_paths = set(_schema_paths(SCHEMA)) - {"global"}
    missing = schema_paths - set(_values_paths(VALUES))
    assert not missing, f"schema keys without a default in values.yaml: {sorted(missing)}"


def test_no_dead_values() -> None:
    """Every values key is read by a template (the config maps are turned into env wholesale)."""
    templates = "\n".join(p.read_text() for p in (CHART / "templates").rglob("*") if p.is_file())
    generic = ("config.", "ingest.config.", "worker.config.")
    free_form = ("podSecurityContext.", "containerSecurityContext.", ".resources.", ".strategy.", ".labels.")
    dead = [
        path
        for path in _values_paths(VALUES)
        if not path.startswith(generic)
        and not any(f in f".{path}." for f in free_form)
        and path.split(".")[-1] not in templates
    ]
    assert not dead, f"values never used by a template: {dead}"


# --- the schema's bounds are the services' bounds -----------------------------------------------------------
def env_suffix(key: str) -> str:
    """lowerCamelCase -> SNAKE_CASE, as the chart's configEnv helper does (sprig's snakecase)."""
    return re.sub(r"(?<!^)(?=[A-Z])", "_", key).upper()


def _schema_at(path: tuple[str, ...]) -> Doc:
    node = SCHEMA
    for part in path:
        node = node["properties"][part]
    return node


def _non_null(node: Doc) -> Doc:
    """The value branch of `anyOf: [{...}, {"type": "null"}]`, or the node itself."""
    branches: list[Doc] = [b for b in node.get("anyOf", [node]) if b.get("type") != "null"]
    [branch] = branches
    return branch


def chart_settings() -> Iterator[tuple[str, str, Doc]]:
    """(values path, env suffix, schema of the value) for every value that becomes a setting."""
    for path in ENV_MAPS:
        for key, node in _schema_at(path)["properties"].items():
            yield ".".join((*path, key)), env_suffix(key), _non_null(node)
    for path, suffix in ENV_VALUES.items():
        yield ".".join(path), suffix, _non_null(_schema_at(path))


def parser_bounds(parse: Callable[[str], Any]) -> Doc:
    """What a parser accepts, read from its closure: envvalues.number(kind, lo, hi) or choice(*options).
    (orderflow/envvalues.py keeps them as closures; reading them here saves a second copy of each bound.)"""
    free = inspect.getclosurevars(parse).nonlocals
    if {"kind", "lo", "hi"} <= set(free):
        out: Doc = {"type": {int: "integer", float: "number"}[free["kind"]]}
        out |= {"minimum": free["lo"]} if free["lo"] is not None else {}
        out |= {"maximum": free["hi"]} if free["hi"] is not None else {}
        return out
    if "options" in free:
        return {"enum": sorted(free["options"])}
    return {}


CHART_SETTINGS = list(chart_settings())


def test_every_chart_setting_is_a_known_setting() -> None:
    unknown = [(path, s) for path, s, _ in CHART_SETTINGS if s not in envsettings.KNOWN | PENDING_SETTINGS]
    assert not unknown


@pytest.mark.parametrize(("path", "suffix", "schema"), CHART_SETTINGS, ids=[c[0] for c in CHART_SETTINGS])
def test_schema_bounds_are_the_settings_bounds(path: str, suffix: str, schema: Doc) -> None:
    if suffix in PENDING_SETTINGS:
        pytest.skip(f"ORDERFLOW_{suffix} is not read by orderflow/envsettings.py yet")
    if suffix == "TASK_TYPES":  # parsed apart (its defaults come from CONCURRENCY/TASK_TIMEOUT_S)
        assert schema["type"] == "string"
        return
    _, parse = envsettings._PARSERS[suffix]
    expected = parser_bounds(parse)
    if not expected:  # free text (str, lists, the work range): no bounds to compare
        assert schema.get("type") == "string", f"{path}: {schema}"
        return
    got: Doc = {k: schema[k] for k in ("type", "minimum", "maximum") if k in schema}
    if "enum" in schema:
        got = {"enum": sorted(schema["enum"])}
    assert got == expected, f"{path} (ORDERFLOW_{suffix}): schema {got}, envsettings.py {expected}"


@pytest.mark.parametrize(("path", "suffix", "schema"), CHART_SETTINGS, ids=[c[0] for c in CHART_SETTINGS])
def test_chart_defaults_are_the_application_defaults(path: str, suffix: str, schema: Doc) -> None:
    """A chart default that differed would silently override the service's own default."""
    if suffix in PENDING_SETTINGS:
        pytest.skip(f"ORDERFLOW_{suffix} is not read by orderflow/envsettings.py yet")
    value: Any = VALUES
    for part in path.split("."):
        value = value[part]
    if value is None:
        return
    text = str(value).lower() if isinstance(value, bool) else str(value)
    loaded = load_settings("worker", {f"ORDERFLOW_{suffix}": text})
    name = "task_types" if suffix == "TASK_TYPES" else envsettings._PARSERS[suffix][0]
    defaults = {f.name: f.default for f in fields(Settings)}
    assert getattr(loaded, name) == defaults[name], f"{path}={value!r} vs Settings.{name}"


def test_the_bounds_check_sees_a_drifted_bound() -> None:
    """Guard: a schema minimum off by one from the parser's is caught."""
    _, parse = envsettings._PARSERS["ACK_WAIT_S"]
    assert parser_bounds(parse) == {"type": "number", "minimum": 1, "maximum": 86400}
    drifted = {"type": "number", "minimum": 2, "maximum": 86400}
    assert drifted != parser_bounds(parse)
