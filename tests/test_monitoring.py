"""The monitoring config, proven by the real tools: promtool checks the Prometheus config and the alert rules and
runs their unit tests (each alert fires on its condition and not on its near miss), and a real Prometheus
(Debian's, installed by the repo's setup) scrapes the session's `voice-insight up` while notes go through it:
every query of the Grafana dashboard returns data, and the end-to-end histogram counted the note."""

from __future__ import annotations

import asyncio
import itertools
import json
import re
import shutil
import subprocess
import tempfile
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support import PrometheusProcess, Speech, Stack, answered
from voice_insight.doubles.telegram_api import TelegramDouble

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "infra" / "config" / "prometheus"
RUNBOOK = REPO / "docs" / "runbook.md"
DASHBOARD = REPO / "infra" / "config" / "grafana" / "dashboards" / "voice-insight.json"
_chats = itertools.count(81_000_001)


def promtool(*args: str, cwd: Path = REPO) -> str:
    assert shutil.which("promtool"), "promtool is missing: run the README's test set-up command"
    done = subprocess.run(["promtool", *args], cwd=cwd, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def alerts() -> list[dict[str, Any]]:
    return [rule for group in yaml.safe_load((CONFIG / "alerts.yml").read_text())["groups"] for rule in group["rules"]]


def test_promtool_accepts_the_config_and_the_rules() -> None:
    assert "SUCCESS" in promtool("check", "config", str(CONFIG / "prometheus.yml"))
    assert f"SUCCESS: {len(alerts())} rules found" in promtool("check", "rules", str(CONFIG / "alerts.yml"))


def test_every_alert_fires_on_its_condition_and_not_on_a_near_miss() -> None:
    files = sorted(p.name for p in (REPO / "tests" / "prometheus").glob("*_test.yml"))
    assert promtool("test", "rules", *files, cwd=REPO / "tests" / "prometheus").count("SUCCESS") == len(files)
    tests = [t for f in files for t in yaml.safe_load((REPO / "tests" / "prometheus" / f).read_text())["tests"]]
    cases = [case for test in tests for case in test["alert_rule_test"]]
    for rule in alerts():
        mine = [case for case in cases if case["alertname"] == rule["alert"]]
        assert any(case["exp_alerts"] for case in mine), f"{rule['alert']} is never shown firing"
        assert any(not case["exp_alerts"] for case in mine), f"{rule['alert']} is never shown not firing"


def test_every_alert_says_what_it_is_how_bad_and_where_its_runbook_entry_is() -> None:
    anchors = {re.sub(r"[^a-z0-9]", "", line.lstrip("#").lower()) for line in RUNBOOK.read_text().splitlines()}
    for rule in alerts():
        assert rule["labels"]["severity"] in {"page", "ticket"}, rule["alert"]
        assert rule["annotations"]["summary"] and rule["annotations"]["description"], rule["alert"]
        link = rule["annotations"]["runbook_url"]
        assert link == f"docs/runbook.md#{rule['alert'].lower()}", link
        assert rule["alert"].lower() in anchors, f"docs/runbook.md has no section {rule['alert']}"


# --- a real Prometheus over the real services ---------------------------------------------------------------


class Prometheus(PrometheusProcess):
    """Debian's Prometheus on a free port, scraping the stack's side doors every second, with our alert rules."""

    def __init__(self, stack: Stack, folder: Path) -> None:
        targets = {
            "gateway": [stack.port("gateway")],
            "transcriber": [stack.port("transcriber")],
            "analyzer": [stack.port("analyzer-default"), stack.port("analyzer-tone")],
            "formatter": [stack.port("formatter")],
            "registrar": [stack.port("registrar")],
            "asker": [stack.port("asker")],
        }
        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(CONFIG / "alerts.yml")],
            "scrape_configs": [
                {"job_name": job, "static_configs": [{"targets": [f"127.0.0.1:{p}" for p in ports]}]}
                for job, ports in targets.items()
            ],
        }
        super().__init__(folder, config)

    def api(self, path: str, **params: str) -> Any:
        url = f"http://127.0.0.1:{self.port}/api/v1/{path}?{urllib.parse.urlencode(params)}"
        with urllib.request.urlopen(url, timeout=10) as response:
            answer = json.loads(response.read())
        assert answer["status"] == "success", answer
        return answer["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self.api("query", query=expr)["result"]
        return result

    def scalar(self, expr: str) -> float:
        result = self.query(expr)
        return float(result[0]["value"][1]) if result else -1.0

    async def until(self, expr: str, check: Any, timeout: float = 60.0) -> float:
        deadline = time.monotonic() + timeout
        while True:
            try:
                got = self.scalar(expr)
            except OSError:  # still starting
                got = None
            if got is not None and check(got):
                return got
            if time.monotonic() > deadline:
                raise TimeoutError(f"{expr}: {got}\n{(self.folder / 'prometheus.log').read_text()[-3000:]}")
            await asyncio.sleep(0.5)


@pytest.fixture
def prometheus_dir() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="vi-prometheus-") as folder:
        yield Path(folder)


def dashboard_queries() -> list[str]:
    panels = json.loads(DASHBOARD.read_text())["panels"]
    return [target["expr"] for panel in panels for target in panel.get("targets", []) if target.get("expr")]


@pytest.mark.slow
@pytest.mark.timeout(300)
async def test_a_real_prometheus_scraping_the_stack_answers_every_dashboard_query(
    stack: Stack, telegram: TelegramDouble, speech: Speech, prometheus_dir: Path
) -> None:
    with Prometheus(stack, prometheus_dir) as prometheus:
        # Every service up and scraped before the note, so the histogram's count before it is known.
        await prometheus.until('count(up{job=~"gateway|transcriber|analyzer|formatter"} == 1)', lambda n: n == 5)
        counted = 'sum(voice_insight_stage_seconds_count{stage="end_to_end"}) or vector(0)'
        before = await prometheus.until(counted, lambda n: n >= 0)
        chat = next(_chats)
        said = "The quarterly report is late. Please ask Daniel to send it before Friday."
        await telegram.send_media(chat, speech.say(said), duration=5)
        broken = next(_chats)  # and one that is not audio at all: the error panels have something to show
        await telegram.send_media(broken, b"\x00not audio at all\xff" * 64, duration=3)
        await telegram.wait_for(lambda: answered(telegram, chat) and answered(telegram, broken), 120)
        assert await prometheus.until(counted, lambda n: n >= before + 2) >= before + 2
        await asyncio.sleep(3)  # a few more scrapes: rate() wants two samples in its window

        empty = [expr for expr in dashboard_queries() if not prometheus.query(expr)]
        assert empty == [], f"dashboard queries with no data: {empty}"
        assert prometheus.scalar('sum(voice_insight_nats_connected{job=~"gateway|transcriber|formatter"})') == 3
        assert prometheus.scalar("min(voice_insight_healthy)") == 1
        assert prometheus.scalar('min(voice_insight_mode_live{mode=~"DEFAULT|TONE"})') == 1
        # The alert rules are loaded and evaluate without error against the real series.
        groups = prometheus.api("rules")["groups"]
        rules = [rule for group in groups for rule in group["rules"]]
        assert len(rules) == len(alerts()) and all(rule["health"] == "ok" for rule in rules), rules
