"""Smoke test of `make bench`: every scenario for about a second, every figure produced.

Runs ``python -m tests.bench`` as `make bench` does (its own Valkey, services, baselines and
loader processes) with one-second loads, a small catch-up backlog and 50 live streams held,
then checks the JSON: each scenario's figures are there, numeric, and paired with their same-run
baseline, and the replicas runs and the cluster scenario's runs (standalone Valkey, 3-master
Valkey Cluster) lost and duplicated nothing. No timing thresholds: the figures
of a shared machine vary too much to assert on.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.bench.procs import ROOT

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

EXPECTED = {
    "1 send": [
        "SendMessage throughput, 64 in flight",
        "SendMessage p50 at full load",
        "one RPC + one Valkey write script, 64 in flight",
        "SendMessage with NotificationService and FrontendService stopped",
    ],
    "2 cpu": [
        *(f"CPU per delivered message: {p}" for p in ("valkey", "user", "message")),
        *(f"CPU per delivered message: {p}" for p in ("notification", "frontend", "loader")),
        "CPU per delivered message: everything incl. loader",
        "CPU per call of one RPC + one write: server + valkey",
        "CPU per message with them stopped: message + user + valkey",
    ],
    "3 e2e": ["send OK → live stream, light load, p50", "send OK → live stream, light load, p99"],
    "4 backlog": [
        "outbox:notifications: peak backlog during load",
        "drain after the load stopped",
        "messages per relay RPC, MessageService → NotificationService",
        "messages per relay RPC, NotificationService → FrontendService",
    ],
    "5 catch-up": ["hop 1 (→ NotificationService), 60 backlogged"],
    "6 memory": ["Redis bytes per stored message, total"],
    "7 replicas": [
        "SendMessage accepted/s, 2 replicas each, 64 in flight, live streams",
        "end to end (accepted → last shown on a stream), 2 replicas each",
        "CPU per message, all 8 processes + valkey",
        "CPU per message: frontend, 2 processes",
        "MessageService: smallest replica's share of SendMessage (2 replicas)",
    ],
    "8 streams": [
        "FrontendService memory per open live stream (50 open, one connection each)",
        "Valkey memory per open live stream",
        "CPU per stream opened: frontend",
    ],
    "9 cluster": [
        "SendMessage accepted/s, 3-master Valkey Cluster, 64 in flight, live streams",
        "end to end (accepted → last shown on a stream), 3-master Valkey Cluster",
        "drain after the load stopped, 3-master Valkey Cluster",
        *(f"CPU per message: {p}, on the Cluster" for p in ("user", "message", "notification")),
        "CPU per message: frontend (standalone Valkey in both runs)",
        "CPU per message: valkey, the 3 masters summed",
        *(f"CPU per message: valkey master {i}" for i in range(3)),
        "CPU per message: every process (services + Valkey)",
        "messages per relay RPC, MessageService → NotificationService, 3-master Valkey Cluster",
    ],
    "REST": [
        "GET /list_conversations (10 conversations), 64 connections",
        "GET /list_notifications (page of 20), 64 connections",
        "GET /users/{email} (own user), 64 connections",
        "POST /messages, 64 connections",
        "GET /list_conversations?page_size=0 → 400, 64 connections",
    ],
}


def _number(value: object) -> bool:
    return isinstance(value, int | float) and math.isfinite(value)


def _assert_nothing_lost_or_doubled(label: str, run: dict[str, Any]) -> None:
    """Every accepted message shown once on its receiver's stream and stored once."""
    assert run["accepted"] > 0, (label, run)
    for key in ("stream", "stored"):
        for fault in ("missing", "twice", "foreign"):
            assert run[f"{key}_{fault}"] == 0, (label, key, fault, run)


def test_every_scenario_produces_every_figure(tmp_path: Path) -> None:
    output = tmp_path / "bench.json"
    command = [sys.executable, "-m", "tests.bench", "--duration", "1", "--output", str(output)]
    command += ["--catchup-count", "60", "--catchup-receivers", "3", "--streams", "50"]
    run = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-4000:]
    assert "| scenario" in run.stdout, run.stdout

    report = json.loads(output.read_text(encoding="utf-8"))
    figures = {(f["scenario"], f["name"]): f for f in report["figures"]}
    for scenario, names in EXPECTED.items():
        for name in names:
            assert (scenario, name) in figures, f"missing {scenario}: {name}"
    for f in report["figures"]:
        assert _number(f["value"]), f
        if f["baseline_of"]:
            assert _number(f["baseline"]) and f["baseline"] > 0, f
            assert _number(f["ratio"]), f
    assert figures[("1 send", "SendMessage throughput, 64 in flight")]["value"] > 0
    assert figures[("all", "failed calls across every loader run")]["value"] == 0
    store = report["details"]["store_throughput"]
    assert store["stored"] >= store["ok"] > 0, store  # the storing echo wrote once per call
    assert report["details"]["catchup"]["sent"] == 60
    assert report["details"]["catchup"]["dead_letters"] == 0
    assert report["details"]["streams"]["ok"] == 50
    # Replicas: correctness, not speed: every accepted message shown once on its receiver's
    # stream and stored once, on 1 and on 2 processes of each service.
    runs = report["details"]["replicas"]
    assert set(runs) == {"1", "2"}
    for label, run in runs.items():
        _assert_nothing_lost_or_doubled(f"{label} replica(s)", run)
    # Cluster: the same load on the standalone Valkey and on a 3-master Cluster, both checked.
    layouts = report["details"]["cluster"]
    assert set(layouts) == {"standalone", "cluster", "masters"}
    for name in ("standalone", "cluster"):
        run = layouts[name]
        _assert_nothing_lost_or_doubled(name, run)
        assert run["errors"] == 0, (name, run)
        assert run["relay_calls"]["hop1"] > 0 and run["relay_calls"]["hop2"] > 0, (name, run)
    assert set(layouts["cluster"]["cpu_s"]) >= {"valkey.m0", "valkey.m1", "valkey.m2"}
