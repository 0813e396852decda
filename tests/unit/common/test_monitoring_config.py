"""deploy/monitoring matches the code: every metric the dashboard queries is defined, and the
scrape config targets the services' default ports."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import REGISTRY

from services.common.metrics import FRONTEND_METRICS_PORT, METRICS_PATH
from services.message.settings import Settings as MessageSettings
from services.notification.settings import Settings as NotificationSettings
from services.user.settings import Settings as UserSettings

MONITORING = Path(__file__).resolve().parents[3] / "deploy" / "monitoring"
_SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_count", "_sum"), "gauge": ("",)}
# A metric selector: a name followed by its label matchers or a range (the dashboard always
# writes one, at least {job=~"$job"}).
_SELECTOR = re.compile(r"([a-zA-Z_:][a-zA-Z0-9_:]*)\s*[{\[]")


def _exposed_names() -> set[str]:
    names: set[str] = set()
    for family in REGISTRY.collect():
        for suffix in _SUFFIXES.get(family.type, ("",)):
            names.add(family.name + suffix)
        names.update(sample.name for sample in family.samples)
    return names


def _dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((MONITORING / "grafana-dashboard.json").read_text())
    return loaded


def _queried_names() -> set[str]:
    names: set[str] = set()
    for panel in _dashboard()["panels"]:
        for target in panel.get("targets", []):
            names.update(_SELECTOR.findall(target["expr"]))
    return names


def test_every_metric_the_dashboard_queries_is_defined() -> None:
    queried = _queried_names()
    assert {
        "grpc_server_handled_total",
        "grpc_server_handling_seconds_bucket",
        "grpc_client_handled_total",
        "http_requests_total",
        "http_request_duration_seconds_bucket",
        "missive_delivery_latency_seconds_bucket",
        "missive_outbox_lag",
        "missive_outbox_pending",
        "missive_outbox_dead_letters",
        "missive_frontend_live_streams",
    } <= queried
    missing = queried - _exposed_names()
    assert not missing, f"the dashboard queries metrics no service defines: {sorted(missing)}"


def test_every_panel_filters_by_the_job_variable() -> None:
    for panel in _dashboard()["panels"]:
        for target in panel.get("targets", []):
            selectors = re.findall(r"\{[^}]*\}", target["expr"])
            assert selectors, target["expr"]
            assert all('job=~"$job"' in s for s in selectors), target["expr"]


def _targets() -> dict[str, tuple[str, int]]:
    config = yaml.safe_load((MONITORING / "prometheus.yml").read_text())
    found = {}
    for job in config["scrape_configs"]:
        assert job.get("metrics_path", "/metrics") == METRICS_PATH
        [static] = job["static_configs"]
        [target] = static["targets"]
        host, port = target.rsplit(":", 1)
        found[static["labels"]["service"]] = (host, int(port))
    return found


def test_scrape_config_targets_the_default_ports() -> None:
    assert _targets() == {
        "user": ("127.0.0.1", UserSettings.rest_port),
        "message": ("127.0.0.1", MessageSettings.rest_port),
        "notification": ("127.0.0.1", NotificationSettings.rest_port),
        "frontend": ("127.0.0.1", FRONTEND_METRICS_PORT),
    }


def test_promtool_accepts_the_scrape_config() -> None:
    promtool = shutil.which("promtool") or "/usr/bin/promtool"
    if not Path(promtool).exists():
        pytest.fail("promtool is missing: run `make promtool` (apt-get install prometheus)")
    checked = subprocess.run(
        [promtool, "check", "config", str(MONITORING / "prometheus.yml")],
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert checked.returncode == 0, checked.stdout.decode() + checked.stderr.decode()
