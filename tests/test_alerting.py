"""Alerts reach a person: the shipped Alertmanager config (infra/config/alertmanager/), proven by the real tools.

`amtool` checks the template and what `render.sh` makes of it; a real Prometheus (Debian's) evaluating the real
alert rules sends a firing ServiceDown to a real Alertmanager (Debian's), which delivers it to a webhook double
and, through the bot, to the admins' chats in the Telegram double, then says when it is resolved; and a cause
that fires keeps its symptoms from being sent (inhibition), until it is resolved.

Only the timing differs from production: the rendered config's group_wait and group_interval are a second, and
the rules' `for:` too (a minute of ServiceDown is not worth a test's time).
"""

from __future__ import annotations

import asyncio
import inspect
import os
import shutil
import subprocess
import time
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
import yaml
from aiohttp import web

from tests.support import REPO, PrometheusProcess, free_port
from voice_insight.doubles import LoopbackServer
from voice_insight.doubles.telegram_api import TelegramDouble

CONFIG = REPO / "infra" / "config" / "alertmanager"
RULES = REPO / "infra" / "config" / "prometheus" / "alerts.yml"
ALERTMANAGER = shutil.which("prometheus-alertmanager") or shutil.which("alertmanager")  # Debian's name, upstream's
BOT_TOKEN = "7000000002:AAH-alerting-test-token_0123456789ab"
ADMINS = (81_900_001, 81_900_002)


def alert_names() -> set[str]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return {rule["alert"] for group in groups for rule in group["rules"]}


def render(
    out: Path, env: dict[str, str] | None = None, template: Path = CONFIG / "alertmanager.yml"
) -> subprocess.CompletedProcess[str]:
    """`render.sh` as the compose service runs it (without the command to exec), in a bare environment."""
    return subprocess.run(
        ["sh", str(CONFIG / "render.sh"), str(template), str(out / "alertmanager.yml")],
        env={"PATH": os.environ["PATH"], **(env or {})},
        capture_output=True,
        text=True,
        timeout=30,
    )


def amtool_check(config: Path) -> str:
    assert shutil.which("amtool"), "amtool is missing: run the README's test set-up command"
    done = subprocess.run(["amtool", "check-config", str(config)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def settings(folder: Path, telegram_api: str, webhook: str, chats: str = ",".join(map(str, ADMINS))) -> dict[str, str]:
    """What compose gives the alertmanager service: the secrets as files (bootstrap.sh writes them without a
    newline; an editor adds one), the admins' ids and the Bot API server."""
    (folder / "telegram_token").write_text(BOT_TOKEN + "\n")
    (folder / "alert_webhook_url").write_text(webhook + "\n")
    return {
        "TELEGRAM_TOKEN_FILE": str(folder / "telegram_token"),
        "ALERT_WEBHOOK_URL_FILE": str(folder / "alert_webhook_url"),
        "ADMIN_USER_IDS": chats,
        "TELEGRAM_API_BASE": telegram_api,
    }


# --- the config, checked ------------------------------------------------------------------------------------


def test_amtool_accepts_the_template_and_the_config_rendered_from_it(tmp_path: Path) -> None:
    assert "SUCCESS" in amtool_check(CONFIG / "alertmanager.yml")  # as committed: valid, with no integrations
    env = settings(tmp_path, "https://api.telegram.org/", "https://hooks.example.org/alerts?key=a&b=c")
    done = render(tmp_path / "run", env)
    assert done.returncode == 0, done.stderr
    assert done.stderr.strip() == "alertmanager: alerts go to 2 Telegram chat(s) and the webhook"
    rendered = tmp_path / "run" / "alertmanager.yml"
    checked = amtool_check(rendered)
    assert "2 receivers" in checked and "1 templates" in checked, checked
    assert oct(rendered.stat().st_mode)[-3:] == "600", "the rendered config holds the bot's token"
    assert BOT_TOKEN not in done.stdout + done.stderr and "hooks.example.org" not in done.stdout + done.stderr

    config = yaml.safe_load(rendered.read_text())
    receivers = {receiver["name"]: receiver for receiver in config["receivers"]}
    assert set(receivers) == {"page", "ticket"}
    for name, silent in (("page", False), ("ticket", True)):
        telegram = receivers[name]["telegram_configs"]
        assert [t["chat_id"] for t in telegram] == list(ADMINS), name
        for one in telegram:
            assert one["bot_token"] == BOT_TOKEN and one["api_url"] == "https://api.telegram.org", one
            assert one["disable_notifications"] is silent and one["parse_mode"] == "HTML", one
        assert receivers[name]["webhook_configs"] == [
            {"url": "https://hooks.example.org/alerts?key=a&b=c", "send_resolved": True}
        ]
    assert config["route"]["group_by"] == ["alertname", "severity"]
    assert [route["receiver"] for route in config["route"]["routes"]] == ["ticket"]

    # ALERT_CHAT_IDS (an admins' group) wins over the admins' own chats.
    done = render(tmp_path / "group", {**env, "ALERT_CHAT_IDS": "-1001234567890"})
    group = yaml.safe_load((tmp_path / "group" / "alertmanager.yml").read_text())
    assert [t["chat_id"] for t in group["receivers"][0]["telegram_configs"]] == [-1001234567890], done.stderr


def test_render_says_when_alerts_reach_nobody_and_refuses_a_bad_setting(tmp_path: Path) -> None:
    done = render(tmp_path / "bare")
    assert done.returncode == 0 and "alerts reach nobody" in done.stderr, done.stderr
    bare = yaml.safe_load((tmp_path / "bare" / "alertmanager.yml").read_text())
    assert all(set(receiver) == {"name"} for receiver in bare["receivers"]), bare["receivers"]
    amtool_check(tmp_path / "bare" / "alertmanager.yml")

    good = settings(tmp_path, "https://api.telegram.org", "")
    assert "no chat" in render(tmp_path / "token", {**good, "ADMIN_USER_IDS": ""}).stderr
    (tmp_path / "bad_token").write_text("not-a-token")
    for bad, named in (
        ({"TELEGRAM_TOKEN_FILE": str(tmp_path / "bad_token")}, "TELEGRAM_TOKEN_FILE"),
        ({"TELEGRAM_TOKEN_FILE": str(tmp_path / "missing")}, "TELEGRAM_TOKEN_FILE"),
        ({"ALERT_CHAT_IDS": "123,@admins"}, "ALERT_CHAT_IDS"),
        ({"ALERT_WEBHOOK_URL": "hooks.example.org"}, "ALERT_WEBHOOK_URL"),
        ({"ALERT_WEBHOOK_URL_FILE": str(tmp_path / "missing")}, "ALERT_WEBHOOK_URL_FILE"),
        ({"ALERT_WEBHOOK_URL": "http://x/'; rm -rf /"}, "ALERT_WEBHOOK_URL"),
        ({"TELEGRAM_API_BASE": "ftp://api.telegram.org"}, "TELEGRAM_API_BASE"),
    ):
        done = render(tmp_path / "refused", {**good, **bad})
        assert done.returncode == 2 and named in done.stderr and done.stderr.count("\n") == 1, (bad, done.stderr)
        assert not (tmp_path / "refused" / "alertmanager.yml").exists(), bad

    typo = tmp_path / "typo.yml"
    typo.write_text((CONFIG / "alertmanager.yml").read_text().replace("#render: telegram silent", "#render: telgram"))
    done = render(tmp_path / "typo", good, template=typo)
    assert done.returncode == 2 and "unknown line in the template" in done.stderr, done.stderr
    assert list((tmp_path / "typo").iterdir()) == [], "nothing half-written is left"


def test_inhibitions_and_routes_name_only_alerts_and_severities_the_rules_have() -> None:
    config = yaml.safe_load((CONFIG / "alertmanager.yml").read_text())
    named: set[str] = set()
    for rule in config["inhibit_rules"]:
        for matcher in rule["source_matchers"] + rule["target_matchers"]:
            label, _, value = matcher.partition("=")
            if label.strip() == "alertname":
                named |= set(value.strip(' ~"').split("|"))
    assert named and named <= alert_names(), named - alert_names()
    severities = {rule["labels"]["severity"] for group in yaml.safe_load(RULES.read_text())["groups"]
                  for rule in group["rules"]}  # fmt: skip
    assert severities <= {"page", "ticket"} and config["route"]["receiver"] == "page"


# --- real processes -----------------------------------------------------------------------------------------


class Webhook(LoopbackServer):
    """A paging service's webhook: keeps every JSON body Alertmanager POSTs."""

    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []
        self.times: list[float] = []
        """When each body arrived (time.monotonic())."""

    def add_routes(self, app: web.Application) -> None:
        app.router.add_post("/alerts", self._post)

    async def _post(self, request: web.Request) -> web.Response:
        self.bodies.append(await request.json())
        self.times.append(time.monotonic())
        return web.Response(text="ok")

    def alerts(self, alertname: str, status: str = "firing") -> list[dict[str, Any]]:
        """The alerts of this name with this status, as Alertmanager sent them (each with its group's body)."""
        return [
            {**alert, "body": body}
            for body in self.bodies
            for alert in body["alerts"]
            if alert["labels"]["alertname"] == alertname and alert["status"] == status
        ]

    def arrivals(self, alertname: str) -> list[float]:
        """When the bodies that carry this alert firing arrived."""
        return [
            at
            for at, body in zip(self.times, self.bodies, strict=True)
            if any(a["labels"]["alertname"] == alertname and a["status"] == "firing" for a in body["alerts"])
        ]


def tail(log: Path) -> str:
    return log.read_text()[-4000:]


async def until(what: str, check: Callable[[], Any], timeout: float = 30.0, log: Path | None = None) -> Any:
    """Poll `check` (a function, or a coroutine function) until it returns something true; fail at the deadline."""
    deadline = time.monotonic() + timeout
    while not (got := (await value) if inspect.isawaitable(value := check()) else value):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}" + (f"\n{tail(log)}" if log else ""))
        await asyncio.sleep(0.1)
    return got


class Alertmanager:
    """Debian's Alertmanager on a free port, alone (no cluster), with the shipped config rendered and its group
    timings cut to a second."""

    def __init__(self, folder: Path, env: dict[str, str]) -> None:
        done = render(folder, env)
        assert done.returncode == 0, done.stderr
        config = folder / "alertmanager.yml"
        tuned = yaml.safe_load(config.read_text())
        tuned["route"].update(group_wait="1s", group_interval="1s")
        config.write_text(yaml.safe_dump(tuned, sort_keys=False))
        self.folder, self.config, self.port = folder, config, free_port()
        self.url = f"http://127.0.0.1:{self.port}"

    async def __aenter__(self) -> Alertmanager:
        assert ALERTMANAGER, "prometheus-alertmanager is missing: run the README's test set-up command"
        self.log_path = self.folder / "alertmanager.log"
        self.log = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            [
                ALERTMANAGER,
                f"--config.file={self.config}",
                f"--storage.path={self.folder / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--cluster.listen-address=",  # one instance: no gossip port
            ],
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        self.http = aiohttp.ClientSession()
        await until("Alertmanager ready", self.ready, log=self.log_path)
        return self

    async def ready(self) -> bool:
        try:
            async with self.http.get(f"{self.url}/-/ready") as response:
                return response.status == 200
        except aiohttp.ClientError:
            return False

    async def __aexit__(self, *exc: object) -> None:
        await self.http.close()
        self.proc.terminate()
        self.proc.wait(timeout=30)
        self.log.close()

    async def post(self, *alerts: dict[str, Any]) -> None:
        async with self.http.post(f"{self.url}/api/v2/alerts", json=list(alerts)) as response:
            assert response.status == 200, await response.text()

    async def alerts(self, **filters: str) -> list[dict[str, Any]]:
        params = [("filter", f'{label}="{value}"') for label, value in filters.items()]
        async with self.http.get(f"{self.url}/api/v2/alerts", params=params) as response:
            assert response.status == 200, await response.text()
            return list(await response.json())


class Prometheus(PrometheusProcess):
    """Debian's Prometheus on a free port with the real alert rules, their `for:` cut to a second, scraping the
    given side doors every second and sending its alerts to the Alertmanager at `alertmanager`."""

    def __init__(self, folder: Path, alertmanager: int, targets: dict[str, int]) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        rules = yaml.safe_load(RULES.read_text())
        for group in rules["groups"]:
            for rule in group["rules"]:
                rule.update({"for": "1s"} if "for" in rule else {})
        (folder / "alerts.yml").write_text(yaml.safe_dump(rules, sort_keys=False))
        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": ["alerts.yml"],
            "alerting": {"alertmanagers": [{"static_configs": [{"targets": [f"127.0.0.1:{alertmanager}"]}]}]},
            "scrape_configs": [
                {"job_name": job, "static_configs": [{"targets": [f"127.0.0.1:{port}"]}]}
                for job, port in targets.items()
            ],
        }
        super().__init__(folder, config)


class SideDoor(LoopbackServer):
    """A service's /metrics, answering at last."""

    def add_routes(self, app: web.Application) -> None:
        app.router.add_get("/metrics", self._metrics)

    async def _metrics(self, request: web.Request) -> web.Response:
        return web.Response(text="voice_insight_healthy 1\n")


@pytest_asyncio.fixture
async def telegram_api() -> AsyncIterator[TelegramDouble]:
    double = TelegramDouble(BOT_TOKEN)  # the bot's own: the alerts come from the bot the admins already have
    await double.start()
    yield double
    await double.stop()


@pytest_asyncio.fixture
async def webhook() -> AsyncIterator[Webhook]:
    double = Webhook()
    await double.start()
    yield double
    await double.stop()


def texts(telegram: TelegramDouble, chat: int) -> list[str]:
    return [message.text for message in telegram.messages(chat)]


def sends(telegram: TelegramDouble, chat: int) -> list[dict[str, Any]]:
    return [params for method, params in telegram.calls if method == "sendMessage" and int(params["chat_id"]) == chat]


@pytest.mark.slow
async def test_a_real_prometheus_pages_the_admins_and_the_webhook_through_a_real_alertmanager(
    tmp_path: Path, telegram_api: TelegramDouble, webhook: Webhook
) -> None:
    down = free_port()  # a formatter's side door that nobody answers on: ServiceDown, from the real rule
    env = settings(tmp_path, telegram_api.base_url, f"{webhook.base_url}/alerts")
    async with Alertmanager(tmp_path / "alertmanager", env) as alertmanager:
        with Prometheus(tmp_path / "prometheus", alertmanager.port, {"formatter": down}) as prometheus:
            fired = await until(
                "ServiceDown at the webhook", lambda: webhook.alerts("ServiceDown"), log=prometheus.log_path
            )
            instance = f"127.0.0.1:{down}"
            assert fired[0]["labels"] == {
                "alertname": "ServiceDown", "job": "formatter", "instance": instance, "severity": "page"
            }  # fmt: skip
            assert fired[0]["annotations"]["summary"] == f"formatter at {instance} does not answer on its side door"
            assert fired[0]["annotations"]["runbook_url"] == "docs/runbook.md#servicedown"
            body = fired[0]["body"]
            assert body["receiver"] == "page" and body["status"] == "firing", body
            assert body["groupLabels"] == {"alertname": "ServiceDown", "severity": "page"}, body

            # Each admin, in their chat with the bot: what, how bad, where, and what to read.
            said = f"• formatter at {instance} does not answer on its side door"
            for admin in ADMINS:
                got = await until(f"the alert in admin {admin}'s chat", lambda a=admin: texts(telegram_api, a))
                assert got == [f"🔥 ServiceDown · page · firing\n{said}\nRunbook: docs/runbook.md#servicedown"], got
                sent = sends(telegram_api, admin)[0]
                assert sent["parse_mode"] == "HTML" and "disable_notification" not in sent, sent  # a page rings

            # The formatter answers again: the alert is resolved, and everyone is told.
            side_door = SideDoor()
            await side_door.start(port=down)
            try:
                resolved = await until(
                    "ServiceDown resolved at the webhook",
                    lambda: webhook.alerts("ServiceDown", "resolved"),
                    log=prometheus.log_path,
                )
                assert resolved[0]["labels"]["instance"] == instance and resolved[0]["body"]["status"] == "resolved"
                for admin in ADMINS:
                    got = await until("the resolution in the chat", lambda a=admin: texts(telegram_api, a)[1:])
                    assert got == [f"✅ ServiceDown · page · resolved\n• resolved: {said[2:]}\n"
                                   "Runbook: docs/runbook.md#servicedown"], got  # fmt: skip
            finally:
                await side_door.stop()


CAUSES = ("NATSDisconnected", "ServiceDown", "ServiceAbsent")
"""What inhibits the symptoms (infra/config/alertmanager/alertmanager.yml), firing or inhibited itself."""


def alert(name: str, severity: str, **labels: str) -> dict[str, Any]:
    return {
        "labels": {"alertname": name, "severity": severity, **labels},
        "annotations": {"summary": f"{name} {' '.join(labels.values())}".strip(), "runbook_url": "docs/runbook.md"},
        "startsAt": datetime.now(UTC).isoformat(),
    }


@pytest.mark.slow
async def test_a_firing_cause_keeps_its_symptoms_from_being_sent_until_it_is_resolved(
    tmp_path: Path, telegram_api: TelegramDouble, webhook: Webhook
) -> None:
    admin = ADMINS[0]
    env = settings(tmp_path, telegram_api.base_url, f"{webhook.base_url}/alerts", chats=str(admin))
    odd = 'Transcription takes 0.62 s per second of audio (> 0.5 & <rising>) on "base"'
    async with Alertmanager(tmp_path / "alertmanager", env) as alertmanager:
        formatter = {"job": "formatter", "instance": "10.0.0.7:9100"}
        cause = alert("NATSDisconnected", "page", **formatter)
        symptoms = [
            alert("NotesWaiting", "page", consumer="formatter"),  # any NATSDisconnected: the bus is the cause
            alert("ServiceUnhealthy", "page", **formatter),  # the same process only
            alert("TranscriptionSlow", "ticket"),  # not a symptom of NATS, but its own page's lesser tier
            alert("ServiceDown", "page", job="transcriber", instance="10.0.0.8:9100"),  # ServiceAbsent says more
            alert("NATSRefused", "page", job="analyzer", instance="10.0.0.9:9100"),  # a job that is down
        ]
        others = [
            alert("ServiceUnhealthy", "page", job="gateway", instance="10.0.0.5:9100"),  # another process
            {**alert("TranscriptionSlow", "page"), "annotations": {"summary": odd}},
            alert("LLMTokensSurge", "ticket"),  # not a symptom of NATS
            alert("ServiceAbsent", "page", job="transcriber"),
            alert("ServiceDown", "page", job="analyzer", instance="10.0.0.9:9100"),  # another job
            alert("NATSRefused", "page", job="gateway", instance="10.0.0.5:9100"),
        ]
        await alertmanager.post(cause, *symptoms, *others)

        # What is not inhibited is sent (each group once its second is up)...
        sent = ("NATSDisconnected", "ServiceUnhealthy", "TranscriptionSlow", "LLMTokensSurge", "ServiceAbsent",
                "ServiceDown", "NATSRefused")  # fmt: skip
        for name in sent:
            await until(f"{name} at the webhook", lambda n=name: webhook.alerts(n), log=alertmanager.log_path)
        # ...and what is inhibited is not: in its own group, or in the group it shares with another process.
        assert [a["labels"]["job"] for a in webhook.alerts("ServiceUnhealthy")] == ["gateway"]
        assert [a["labels"]["severity"] for a in webhook.alerts("TranscriptionSlow")] == ["page"]
        assert [a["labels"]["job"] for a in webhook.alerts("ServiceDown")] == ["analyzer"]
        assert [a["labels"]["job"] for a in webhook.alerts("NATSRefused")] == ["gateway"]
        assert webhook.alerts("NotesWaiting") == []
        causes = {
            (a["labels"]["alertname"], a["labels"].get("job")): a["fingerprint"]
            for a in await alertmanager.alerts(severity="page")
        }
        for symptom, by in (
            ({"alertname": "NotesWaiting"}, ("NATSDisconnected", "formatter")),
            ({"alertname": "ServiceUnhealthy", "job": "formatter"}, ("NATSDisconnected", "formatter")),
            ({"alertname": "TranscriptionSlow", "severity": "ticket"}, ("TranscriptionSlow", None)),
            ({"alertname": "ServiceDown", "job": "transcriber"}, ("ServiceAbsent", "transcriber")),
            ({"alertname": "NATSRefused", "job": "analyzer"}, ("ServiceDown", "analyzer")),
        ):
            [held] = await alertmanager.alerts(**symptom)
            assert held["status"]["state"] == "suppressed" and held["status"]["inhibitedBy"] == [causes[by]], held

        # The admin's chat: one message a group sent, none of NotesWaiting; the ticket without a sound.
        await until("a message a group", lambda: len(texts(telegram_api, admin)) == len(sent), timeout=60)
        firing = texts(telegram_api, admin)
        assert not any("NotesWaiting" in text for text in firing), firing
        assert sorted(text.split("\n")[0] for text in firing) == [
            "🔥 LLMTokensSurge · ticket · firing",
            "🔥 NATSDisconnected · page · firing",
            "🔥 NATSRefused · page · firing",
            "🔥 ServiceAbsent · page · firing",
            "🔥 ServiceDown · page · firing",
            "🔥 ServiceUnhealthy · page · firing",
            "🔥 TranscriptionSlow · page · firing",
        ], firing
        silent = {p["text"].split("\n")[0]: p.get("disable_notification") for p in sends(telegram_api, admin)}
        assert silent["🔥 <b>LLMTokensSurge</b> · ticket · firing"] == "true", silent
        assert silent["🔥 <b>NATSDisconnected</b> · page · firing"] is None, silent
        # A summary with Telegram-HTML's reserved characters arrives as it was written.
        assert f"• {odd}\n" in next(text for text in firing if text.startswith("🔥 TranscriptionSlow")), firing

        # NATS is back, and the services: the symptoms that still fire are sent now, and only now.
        back = time.monotonic()
        causes_posted = [a for a in (cause, *symptoms, *others) if a["labels"]["alertname"] in CAUSES]
        await alertmanager.post(*({**a, "endsAt": datetime.now(UTC).isoformat()} for a in causes_posted))
        notes = await until("NotesWaiting at the webhook", lambda: webhook.arrivals("NotesWaiting"))
        assert notes[0] > back, "NotesWaiting was sent while its causes fired"
        for name, job in (("ServiceUnhealthy", "formatter"), ("NATSRefused", "analyzer")):
            await until(f"{name} of the {job}", lambda n=name, j=job: [
                a for a in webhook.alerts(n) if a["labels"]["job"] == j
            ])  # fmt: skip
        await until("NotesWaiting in the admin's chat", lambda: any(
            t.startswith("🔥 NotesWaiting · page · firing") for t in texts(telegram_api, admin)
        ))  # fmt: skip

        # Silencing, as the runbook says: amtool, by alert name, for a while, with a comment.
        done = subprocess.run(
            ["amtool", f"--alertmanager.url={alertmanager.url}", "silence", "add", "alertname=LLMTokensSurge",
             "--duration=2h", "--comment=known: the host is being moved", "--author=test"],
            capture_output=True, text=True, timeout=30,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        [silenced] = await alertmanager.alerts(alertname="LLMTokensSurge")
        assert silenced["status"]["silencedBy"] == [done.stdout.strip()], silenced


@pytest.mark.slow
async def test_the_registrar_gone_hides_no_backlog(
    tmp_path: Path, telegram_api: TelegramDouble, webhook: Webhook
) -> None:
    """Only admins' mode changes wait for the registrar: its absence (a ticket), its being down or cut off from
    NATS cause no backlog, and must not keep NotesWaiting from paging."""
    env = settings(tmp_path, telegram_api.base_url, f"{webhook.base_url}/alerts", chats=str(ADMINS[0]))
    async with Alertmanager(tmp_path / "alertmanager", env) as alertmanager:
        registrar = {"job": "registrar", "instance": "10.0.0.6:9100"}
        await alertmanager.post(
            alert("ServiceAbsent", "ticket", job="registrar"),
            alert("ServiceDown", "page", **registrar),
            alert("NATSDisconnected", "page", **registrar),
            alert("NotesWaiting", "page", consumer="transcriber"),
        )
        await until("NotesWaiting at the webhook", lambda: webhook.alerts("NotesWaiting"), log=alertmanager.log_path)
        [waiting] = await alertmanager.alerts(alertname="NotesWaiting")
        assert waiting["status"]["state"] == "active", waiting
