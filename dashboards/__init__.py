"""Grafana dashboards of orderflow, built in code with grafana-foundation-sdk (Grafana 11).

`python -m dashboards` writes them to charts/orderflow/dashboards/, where the Helm chart and the
compose Grafana pick them up; tests/observability/test_dashboards.py fails when the committed JSON
is older than this code.
"""

from __future__ import annotations

from dashboards.render import DASHBOARDS, render_all, write_all

__all__ = ["DASHBOARDS", "render_all", "write_all"]
