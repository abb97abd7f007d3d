"""Write charts/orderflow/README.md from README.md.gotmpl, Chart.yaml and values.yaml, as helm-docs does.

helm-docs (a Go binary) is not installable here, so this is the subset of it the chart uses:
- a value is documented by a `# -- text` comment block right above its key (continued by plain `#`
  lines); a plain `#` comment above a map only heads a group of values;
- the values table has one row per documented key, in file order: key path, type (string, int,
  float, bool, list, object), default (JSON, as helm-docs prints it) and description; the keys
  under a documented map are folded into its default unless they are documented themselves;
- README.md.gotmpl may use the helm-docs templates chart.header, chart.description,
  chart.versionLine, chart.requirementsSection and chart.valuesSection; anything else is an error.
With --check it writes nothing and exits 1 when README.md is stale or a value has no description.

    python scripts/chart_readme.py [--chart charts/orderflow] [--check]
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
CHART = REPO / "charts" / "orderflow"
_KEY = re.compile(r"^( *)([A-Za-z_][A-Za-z0-9_]*):(.*)$")
_TEMPLATE = re.compile(r"\{\{-?\s*template\s+\"([a-zA-Z.]+)\"\s+\.\s*-?\}\}")


@dataclass(frozen=True)
class Key:
    """One key line of values.yaml: its dotted path and the `# --` description above it, if any."""

    path: tuple[str, ...]
    description: str | None
    line: int


def parse_keys(text: str) -> list[Key]:
    """Every key of a block-style values.yaml, in file order, with its `# --` description."""
    keys: list[Key] = []
    stack: list[tuple[int, str]] = []
    comments: list[str] = []
    item_indent: int | None = None  # the dash of the block list item we are in: its keys are data
    for number, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if stripped.startswith("#"):
            comments.append(stripped)
            continue
        indent = len(line) - len(line.lstrip(" "))
        if stripped.startswith("-"):
            item_indent = indent if item_indent is None else min(item_indent, indent)
            comments = []
            continue
        if item_indent is not None and stripped and indent > item_indent:
            comments = []
            continue
        if stripped:
            item_indent = None
        match = _KEY.match(line)
        if match:
            while stack and stack[-1][0] >= indent:
                stack.pop()
            stack.append((indent, match.group(2)))
            keys.append(Key(tuple(k for _, k in stack), _description(comments), number))
        comments = []
    return keys


def _description(comments: list[str]) -> str | None:
    """helm-docs: the block's last `# --` line starts the description, the `#` lines after it go on."""
    starts = [i for i, c in enumerate(comments) if c == "# --" or c.startswith("# -- ")]
    if not starts:
        return None
    lines = [comments[starts[-1]].removeprefix("# --").strip()]
    lines += [c.removeprefix("#").strip() for c in comments[starts[-1] + 1 :]]
    return " ".join(part for part in lines if part)


def type_name(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "float"
    if isinstance(value, list):
        return "list"
    if isinstance(value, dict):
        return "object"
    return "string"  # strings, and null as helm-docs types it


def default_text(value: Any) -> str:
    """The default as helm-docs prints it: Go's json.Marshal (compact, sorted keys, no escaping)."""
    return json.dumps(value, separators=(",", ":"), sort_keys=True, ensure_ascii=False)


def _lookup(values: Any, path: tuple[str, ...]) -> Any:
    for part in path:
        values = values[part]
    return values


def problems(keys: list[Key], values: dict[str, Any]) -> list[str]:
    """Values that no description covers: neither the key nor a map above it has a `# --` block."""
    described = {k.path for k in keys if k.description}
    empty = [
        f"values.yaml:{k.line}: {'.'.join(k.path)}: empty `# --` description"
        for k in keys
        if k.description == ""
    ]
    uncovered = []
    for key in keys:
        value = _lookup(values, key.path)
        leaf = not isinstance(value, dict) or not value
        if leaf and not any(key.path[:n] in described for n in range(1, len(key.path) + 1)):
            uncovered.append(f"values.yaml:{key.line}: {'.'.join(key.path)} has no `# --` description")
    return empty + uncovered


def values_table(keys: list[Key], values: dict[str, Any]) -> str:
    rows = ["| Key | Type | Default | Description |", "|-----|------|---------|-------------|"]
    for key in keys:
        if not key.description:
            continue
        value = _lookup(values, key.path)
        cells = [".".join(key.path), type_name(value), f"`{default_text(value)}`", key.description]
        rows.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(rows)


def render(chart: Path) -> tuple[str, list[str]]:
    """(README text, problems) for the chart directory."""
    meta = yaml.safe_load((chart / "Chart.yaml").read_text(encoding="utf-8"))
    text = (chart / "values.yaml").read_text(encoding="utf-8")
    values = yaml.safe_load(text)
    keys = parse_keys(text)
    sections = {
        "chart.header": f"# {meta['name']}",
        "chart.description": str(meta.get("description", "")).strip(),
        "chart.versionLine": (
            f"Version: {meta['version']} · Type: {meta.get('type', 'application')}"
            f" · AppVersion: {meta.get('appVersion', '')}"
        ),
        "chart.requirementsSection": f"## Requirements\n\nKubernetes: `{meta['kubeVersion']}`",
        "chart.valuesSection": "## Values\n\n" + values_table(keys, values),
    }
    template = (chart / "README.md.gotmpl").read_text(encoding="utf-8")
    unknown = sorted({m.group(1) for m in _TEMPLATE.finditer(template)} - set(sections))
    found = problems(keys, values) + [f"README.md.gotmpl: unknown template {name!r}" for name in unknown]
    readme = _TEMPLATE.sub(lambda m: sections.get(m.group(1), m.group(0)), template)
    if "{{" in readme:
        found.append("README.md.gotmpl: a `{{ ... }}` that is not one of the supported templates")
    note = (
        "<!-- Generated by scripts/chart_readme.py from README.md.gotmpl and values.yaml: edit those. -->\n"
    )
    return note + readme.rstrip("\n") + "\n", found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--chart", type=Path, default=CHART)
    parser.add_argument("--check", action="store_true", help="only check: exit 1 if README.md is stale")
    args = parser.parse_args(argv)
    readme, found = render(args.chart)
    for problem in found:
        print(problem, file=sys.stderr)
    if found:
        return 1
    target = args.chart / "README.md"
    if args.check:
        if not target.is_file() or target.read_text(encoding="utf-8") != readme:
            print(f"{target} is stale: run python scripts/chart_readme.py and commit it", file=sys.stderr)
            return 1
        return 0
    target.write_text(readme, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
