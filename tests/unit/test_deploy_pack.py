"""The observability pack in deploy/: the alerting rules and the Grafana dashboard use only
series the service declares, every rule says what to do, and promtool accepts the files.

The metric names are collected from ``ingest.adapters.prometheus`` through prometheus_client's
collector API (``describe``/``collect``), never from a list kept here, so a renamed metric
breaks this test rather than a dashboard in production.
"""

from __future__ import annotations

import inspect
import json
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.metrics import MetricWrapperBase
from prometheus_client.registry import Collector

from ingest.adapters import prometheus as service_metrics

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
ALERTS = DEPLOY / "prometheus" / "alerts.yml"
ALERTS_TEST = DEPLOY / "prometheus" / "alerts_test.yml"
PROMETHEUS_CONFIG = DEPLOY / "prometheus" / "prometheus.yml"
DASHBOARD = DEPLOY / "grafana" / "usage-ingest.json"
RUNBOOK = DEPLOY / "README.md"

# Series Prometheus itself writes for every target; the only ones the pack may use besides
# the service's own.
PROMETHEUS_SERIES = frozenset({"up"})
SEVERITIES = frozenset({"critical", "warning", "info"})
HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")


# -- what the service declares ------------------------------------------------------------------


def _stub(collector: type[Collector]) -> Collector:
    """An instance of a scrape-time collector of the module, every argument a callable
    answering 0 (JournalCollector takes its samplers)."""
    required = [
        p
        for p in inspect.signature(collector).parameters.values()
        if p.default is inspect.Parameter.empty and p.kind is not inspect.Parameter.VAR_KEYWORD
    ]
    return collector(*(lambda: 0 for _ in required))


def declared_families() -> dict[str, str]:
    """Family name -> type, for every collector that ingest.adapters.prometheus defines."""
    families: dict[str, str] = {}
    for _, value in inspect.getmembers(service_metrics):
        if isinstance(value, MetricWrapperBase):
            for family in value.describe():
                families[family.name] = family.type
        elif (
            inspect.isclass(value)
            and Collector in inspect.getmro(value)  # a Protocol: no issubclass
            and value.__module__ == service_metrics.__name__
        ):
            for family in _stub(value).collect():
                families[family.name] = family.type
    return families


def declared_series() -> set[str]:
    """The sample names the exposition carries for those families (counters end in _total;
    a histogram is its family name, which usages reach after stripping _bucket/_sum/_count)."""
    names: set[str] = set()
    for name, kind in declared_families().items():
        names.add(f"{name}_total" if kind == "counter" else name)
    return names


def base_name(series: str) -> str:
    """``x_bucket`` / ``x_sum`` / ``x_count`` -> ``x`` when ``x`` is a declared histogram."""
    histograms = {n for n, k in declared_families().items() if k in ("histogram", "summary")}
    for suffix in HISTOGRAM_SUFFIXES:
        if series.endswith(suffix) and series[: -len(suffix)] in histograms:
            return series[: -len(suffix)]
    return series


# -- metric names in PromQL ---------------------------------------------------------------------

KEYWORDS = frozenset(
    {
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
        "and",
        "or",
        "unless",
        "bool",
        "offset",
        "atan2",
        "inf",
        "nan",
    }
)
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_VARIABLE = re.compile(r"\$\{[^}]*\}|\$\w+")
_MATCHERS = re.compile(r"\{[^{}]*\}")
_RANGE = re.compile(r"\[[^\]]*\]")
_LABEL_LIST = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_IDENTIFIER = re.compile(r"(?<![\w.])([A-Za-z_:][\w:]*)(?!\w)(\s*\()?")
_SELECTOR = re.compile(r"([A-Za-z_:][\w:]*)\s*\{([^{}]*)\}")
_MATCHER_LABEL = re.compile(r"([A-Za-z_]\w*)\s*(?:=~|!~|!=|=)")


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects: the identifiers left once strings,
    Grafana variables, label matchers, ranges and label lists are gone, minus functions
    (an identifier followed by ``(``) and keywords."""
    text = _STRING.sub('""', expr)
    text = _VARIABLE.sub("1", text)
    text = _MATCHERS.sub(" ", text)
    text = _RANGE.sub(" ", text)
    text = _LABEL_LIST.sub(" ", text)
    return {
        m.group(1)
        for m in _IDENTIFIER.finditer(text)
        if not m.group(2) and m.group(1).lower() not in KEYWORDS
    }


def selector_labels(expr: str) -> set[tuple[str, str]]:
    """(metric, label) for each label a selector matches on, e.g. ``x{reason="503"}``."""
    text = _STRING.sub('""', expr)
    return {
        (m.group(1), label) for m in _SELECTOR.finditer(text) for label in _MATCHER_LABEL.findall(m.group(2))
    }


# -- the pack's expressions ---------------------------------------------------------------------


def alert_rules() -> list[dict[str, Any]]:
    doc = yaml.safe_load(ALERTS.read_text())
    return [rule for group in doc["groups"] for rule in group["rules"]]


def dashboard() -> dict[str, Any]:
    return dict(json.loads(DASHBOARD.read_text()))


def panels(board: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for panel in board["panels"]:
        yield panel
        yield from panel.get("panels", [])  # a collapsed row keeps its panels inside


def dashboard_expressions(board: dict[str, Any]) -> list[str]:
    exprs = [t["expr"] for p in panels(board) for t in p.get("targets", []) if t.get("expr")]
    for variable in board["templating"]["list"]:
        query = variable.get("query")
        if variable["type"] == "query":
            text = query["query"] if isinstance(query, dict) else query
            # label_values(metric, label): the metric is the selector
            exprs.append(re.sub(r"^label_values\((.*),\s*\w+\)$", r"\1", text))
    return exprs


def pack_expressions() -> dict[str, str]:
    """Where -> PromQL, for every expression of the rules and the dashboard."""
    found = {f"alert {r['alert']}": str(r["expr"]) for r in alert_rules()}
    for i, expr in enumerate(dashboard_expressions(dashboard())):
        found[f"dashboard expression {i}"] = expr
    return found


def pack_series() -> set[str]:
    """Every series name the pack uses, histograms by their family name."""
    return {base_name(n) for expr in pack_expressions().values() for n in metric_names(expr)}


# -- tests --------------------------------------------------------------------------------------


def test_the_extractor_reads_promql() -> None:
    expr = (
        'histogram_quantile(0.99, sum by (job, le) (rate(ingest_intake_seconds_bucket{job=~"$job"}'
        "[$__rate_interval]))) > 0.25 and on(job) time() - max(ingest_reconcile_last_run_timestamp)"
        ' > 300 or up{job="a b"} == 0 unless sum without (reason) (x:recorded:rate5m offset 5m)'
    )
    assert metric_names(expr) == {
        "ingest_intake_seconds_bucket",
        "ingest_reconcile_last_run_timestamp",
        "up",
        "x:recorded:rate5m",
    }
    assert metric_names('rate(a_total{reason=~"429:.*"}[5m]) / 1e3') == {"a_total"}
    assert selector_labels('rate(a_total{reason=~"429:.*", job="x"}[5m])') == {
        ("a_total", "reason"),
        ("a_total", "job"),
    }


def test_the_service_declares_the_metrics_the_readme_lists() -> None:
    series = declared_series()
    assert "ingest_reports_rejected_total" in series
    assert "ingest_intake_seconds" in series  # a histogram, by its family name
    assert "ingest_backlog_reports" in series  # the scrape-time collector
    assert base_name("ingest_intake_seconds_bucket") == "ingest_intake_seconds"
    assert base_name("ingest_reports_committed_total") == "ingest_reports_committed_total"


def test_every_series_in_the_rules_and_the_dashboard_is_declared_by_the_service() -> None:
    declared = declared_series() | PROMETHEUS_SERIES
    unknown = {
        where: sorted(n for n in (base_name(m) for m in metric_names(expr)) if n not in declared)
        for where, expr in pack_expressions().items()
    }
    unknown = {where: names for where, names in unknown.items() if names}
    assert not unknown, f"series the service does not export: {unknown}; it declares {sorted(declared)}"


def test_the_pack_watches_every_metric_the_service_exports() -> None:
    """Not a rule of Prometheus, a rule of this pack: a metric nobody graphs is dead weight."""
    assert declared_series() - pack_series() == set()


def test_every_rule_has_a_for_a_severity_and_says_what_to_do() -> None:
    rules = alert_rules()
    assert len(rules) >= 8
    anchors = {
        re.sub(r"[^\w\- ]", "", line.lstrip("#").strip().lower()).replace(" ", "-")
        for line in RUNBOOK.read_text().splitlines()
        if line.startswith("#")
    }
    for rule in rules:
        name = rule["alert"]
        assert re.fullmatch(r"\d+[smh]", str(rule.get("for", ""))), f"{name}: no `for:`"
        assert rule["labels"]["severity"] in SEVERITIES, name
        annotations = rule["annotations"]
        assert len(annotations["summary"]) > 20, name
        assert len(annotations["description"]) > 80, name
        runbook = annotations["runbook"]
        assert runbook == f"deploy/README.md#{name.lower()}", name
        assert name.lower() in anchors, f"{name}: no section in deploy/README.md"
    names = [r["alert"] for r in rules]
    assert len(names) == len(set(names))


def test_the_rules_cover_the_failure_modes_of_the_issue() -> None:
    by_series: dict[str, set[str]] = {}
    for rule in alert_rules():
        for name in metric_names(str(rule["expr"])):
            by_series.setdefault(base_name(name), set()).add(rule["alert"])
    for series in (
        "ingest_backlog_reports",
        "ingest_accept_to_commit_seconds",
        "ingest_reports_quarantined_total",
        "ingest_reports_rejected_total",
        "ingest_batch_size",
        "ingest_reconcile_last_run_timestamp",
    ):
        assert by_series.get(series), f"no rule watches {series}"
    reasons = {
        label_matcher
        for rule in alert_rules()
        for label_matcher in re.findall(r'reason=~?"([^"]*)"', str(rule["expr"]))
    }
    assert {"503", "429:.*"} <= reasons


def test_the_dashboard_is_importable_and_uses_the_datasource_variable() -> None:
    board = dashboard()
    assert 36 <= board["schemaVersion"] <= 41
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    ids = [p["id"] for p in panels(board)]
    assert len(ids) == len(set(ids))
    wanted = {"${datasource}"}
    for p in panels(board):
        if p["type"] == "row":
            continue
        assert p["datasource"]["uid"] in wanted, p["title"]
        assert p["targets"], p["title"]
        for t in p["targets"]:
            assert t["datasource"]["uid"] in wanted, p["title"]
        assert p.get("description"), f"panel {p['title']!r} says nothing about what it shows"
        grid = p["gridPos"]
        assert grid["x"] + grid["w"] <= 24, p["title"]
    titles = {p["title"] for p in panels(board)}
    for title in (
        "Intake rate",
        "Intake latency",
        "Backlog",
        "Commit rate",
        "Commit delay",
        "Batch size",
        "Quarantine by reason",
        "Rejections by reason",
    ):
        assert title in titles
    latency = next(p for p in panels(board) if p["title"] == "Intake latency")
    quantiles = {re.search(r"histogram_quantile\(([\d.]+)", t["expr"]).group(1) for t in latency["targets"]}  # type: ignore[union-attr]
    assert quantiles == {"0.5", "0.99"}


# -- promtool -----------------------------------------------------------------------------------


@pytest.fixture
def promtool() -> str:
    """promtool (Debian: apt-get install prometheus). Missing: skipped, but a failure under CI."""
    found = shutil.which("promtool")
    if found is None:
        if os.environ.get("CI"):
            pytest.fail("promtool is not on PATH and CI is set: apt-get install -y prometheus")
        pytest.skip("promtool is not on PATH (apt-get install prometheus)")
    return found


def _run(*argv: str) -> None:
    result = subprocess.run(argv, capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert result.returncode == 0, f"{' '.join(argv)}\n{result.stdout}\n{result.stderr}"


def test_promtool_accepts_the_rules(promtool: str) -> None:
    _run(promtool, "check", "rules", str(ALERTS))


def test_promtool_unit_tests_of_the_rules_pass(promtool: str) -> None:
    """deploy/prometheus/alerts_test.yml: when each alert fires, and when it must not."""
    tested = set(re.findall(r"alertname[:=]\s*\"?(\w+)", ALERTS_TEST.read_text()))
    assert {r["alert"] for r in alert_rules()} <= tested
    _run(promtool, "test", "rules", str(ALERTS_TEST))


def test_promtool_accepts_the_scrape_config(promtool: str) -> None:
    _run(promtool, "check", "config", str(PROMETHEUS_CONFIG))


def test_promtool_parses_every_dashboard_expression(promtool: str, tmp_path: Path) -> None:
    """Grafana's variables replaced by values, each expression becomes a recording rule:
    ``promtool check rules`` then parses it as PromQL."""
    substitutions = {"$__rate_interval": "5m", "$__interval": "1m", "$job": ".*", "${datasource}": "x"}
    rules = []
    for i, expr in enumerate(dashboard_expressions(dashboard())):
        for variable, value in substitutions.items():
            expr = expr.replace(variable, value)
        assert "$" not in expr, expr
        rules.append({"record": f"dashboard:expression_{i}", "expr": expr})
    path = tmp_path / "dashboard-rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    _run(promtool, "check", "rules", str(path))
