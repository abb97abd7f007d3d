"""Shared pieces of the orderflow dashboards: the datasource variable, query and panel helpers.

Every panel queries the `${datasource}` variable (type prometheus), so the same JSON works under
Grafana file provisioning, the Helm chart's sidecar and a manual import.
"""

from __future__ import annotations

from grafana_foundation_sdk.builders import common as cb
from grafana_foundation_sdk.builders import dashboard as db
from grafana_foundation_sdk.builders import prometheus, stat, timeseries
from grafana_foundation_sdk.cog import builder as cogbuilder
from grafana_foundation_sdk.cog import variants as cogvariants
from grafana_foundation_sdk.models import common as cm
from grafana_foundation_sdk.models import dashboard as dm

DATASOURCE = dm.DataSourceRef(type_val="prometheus", uid="${datasource}")
# $__rate_interval is at least four scrape intervals: never an empty rate() on a slow scrape.
RATE = "$__rate_interval"
ORDERS_ROUTE = 'route="/orders"'


def datasource_variable() -> db.DatasourceVariable:
    return db.DatasourceVariable("datasource").label("Data source").type("prometheus")


def query(expr: str, legend: str = "__auto", ref: str = "A") -> prometheus.Dataquery:
    return prometheus.Dataquery().expr(expr).legend_format(legend).ref_id(ref).datasource(DATASOURCE).range()


def summed(
    metric: str, by: str = "", legend: str = "", fn: str = "rate", ref: str = "A"
) -> prometheus.Dataquery:
    """A counter's `fn` (rate or increase) summed over every pod, by the labels `by` names (comma
    separated) where it names some; the legend is their values unless one is given."""
    grouping = f" by ({by}) " if by else ""
    labels = " ".join(f"{{{{{label.strip()}}}}}" for label in by.split(",")) if by else ""
    return query(f"sum{grouping}({fn}({metric}[{RATE}]))", legend or labels, ref)


def dashboard(title: str, uid: str, description: str, since: str) -> db.Dashboard:
    """What every orderflow dashboard shares: its tags, a 10 s refresh, the browser's time zone, one
    crosshair across panels and the datasource variable."""
    return (
        db.Dashboard(title)
        .uid(uid)
        .description(description)
        .tags(["orderflow", "generated"])
        .editable()
        .refresh("10s")
        .time(since, "now")
        .timezone("browser")
        .tooltip(dm.DashboardCursorSync.CROSSHAIR)
        .with_variable(datasource_variable())
    )


def per_pod(selector: str, aggregate: str = "max") -> str:
    """One series per worker pod, labelled `pod`: the pod's name where Prometheus knows it (the
    Prometheus Operator's ServiceMonitor adds `pod`), else the scrape address (compose, a static
    config). label_join makes "<pod>@<instance>" ("@<instance>" without a pod), label_replace keeps
    the part before the "@" when there is one."""
    joined = f'label_join({selector}, "pod", "@", "pod", "instance")'
    return f'{aggregate} by (pod) (label_replace({joined}, "pod", "$1", "pod", "@?([^@]+).*"))'


def graph(
    title: str,
    description: str,
    targets: list[cogbuilder.Builder[cogvariants.Dataquery]],
    unit: str = "short",
    width: int = 12,
    height: int = 8,
    stacked: bool = False,
    minimum: float = 0,
) -> timeseries.Panel:
    panel = (
        timeseries.Panel()
        .title(title)
        .description(description)
        .datasource(DATASOURCE)
        .targets(targets)
        .unit(unit)
        .min(minimum)
        .span(width)
        .height(height)
        .fill_opacity(10)
        .line_width(1)
        .show_points(cm.VisibilityMode.NEVER)
        .legend(
            cb.VizLegendOptions()
            .display_mode(cm.LegendDisplayMode.TABLE)
            .placement(cm.LegendPlacement.BOTTOM)
            .show_legend(True)
            .calcs(["mean", "max", "lastNotNull"])
        )
        .tooltip(cb.VizTooltipOptions().mode(cm.TooltipDisplayMode.MULTI).sort(cm.SortOrder.DESCENDING))
    )
    if stacked:
        panel = panel.stacking(cb.StackingConfig().mode(cm.StackingMode.NORMAL))
    return panel


def single(title: str, description: str, expr: str, unit: str = "short", width: int = 4) -> stat.Panel:
    return (
        stat.Panel()
        .title(title)
        .description(description)
        .datasource(DATASOURCE)
        .with_target(query(expr))
        .unit(unit)
        .span(width)
        .height(4)
        .graph_mode(cm.BigValueGraphMode.AREA)
        .reduce_options(cb.ReduceDataOptions().calcs(["lastNotNull"]))
    )


def numbered(dashboard: db.Dashboard) -> dm.Dashboard:
    """Build and give every panel a stable id (Grafana keys links and panel state on it)."""
    built = dashboard.build()
    next_id = 1
    for panel in built.panels or []:
        panel.id_val = next_id
        next_id += 1
        for inner in getattr(panel, "panels", None) or []:
            inner.id_val = next_id
            next_id += 1
    return built
