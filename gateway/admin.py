"""Admin commands: the mode registry from the chat, for the users in `ADMIN_USER_IDS` and nobody else.

A change (`/set_model`, `/add_mode`, `/edit_prompt`, `/enable_mode`, `/disable_mode`, `/rollback`) is a
`ModeChange` request on `admin.mode.change`: an analyzer process, which owns the LLM, validates and applies it,
and its `ModeChangeResult` comes back here (`AdminInbox`) to be answered in the admin's chat, with every reason
when it was refused. The request's ID derives from the Telegram message, so a redelivered update asks once.
`/mode` reads the registry and `/stats` the usage by the hour (`infra.domain.usage`) directly. Admins are recorded
as keyed hashes and shown as "admin #N" (their place in `ADMIN_USER_IDS`), never as raw ids.
"""

from __future__ import annotations

import datetime
import html
import logging
from dataclasses import dataclass

from aiogram import Bot, Router
from aiogram.enums import ChatType
from aiogram.exceptions import TelegramBadRequest, TelegramForbiddenError
from aiogram.filters import Command, CommandObject, Filter
from aiogram.types import Message, ReplyParameters

from gateway.chat_modes import policy_said
from gateway.intake import correlation_id
from infra.bus import Bus, Delivery, consumes
from infra.bus.names import (
    CONSUMER_ADMIN_REPLIES,
    CONSUMER_GATEWAY_ALERTS,
    STREAM_ADMIN,
    STREAM_CHAT_MODES,
    SUBJECT_ALERT,
    SUBJECT_CHAT_MODE_CHANGE,
    SUBJECT_MODE_CHANGE,
    SUBJECT_MODE_CHANGED,
)
from infra.domain import usage
from infra.domain.chat_modes import is_chat_mode, model_for, name_of, read_policy
from infra.domain.contracts import AdminAlert, ChatModeChange, ModeAction, ModeChange, ModeChangeResult, ReplyTo
from infra.domain.definitions import ModeDefinition, load
from infra.domain.limits import user_key
from infra.domain.registry import ModeRegistry, UnknownMode
from infra.domain.usage import HourOfUse
from infra.voice.texts import text

log = logging.getLogger("voice_insight.gateway.admin")

CHANGES: dict[str, tuple[ModeAction, str]] = {
    "set_model": ("set_model", "/set_model MODE MODEL"),
    "add_mode": ("add", "/add_mode\n<definition, TOML>"),
    "edit_prompt": ("edit_prompt", "/edit_prompt MODE\n<the new prompt, with {text} once>"),
    "enable_mode": ("enable", "/enable_mode MODE"),
    "disable_mode": ("disable", "/disable_mode MODE"),
    "rollback": ("rollback", "/rollback MODE [VERSION]"),
}
ADMIN_COMMANDS = (*CHANGES, "mode", "stats", "chatmode_policy")


@dataclass(frozen=True)
class Admins:
    ids: tuple[int, ...]
    key: bytes

    def who(self, user_id: int) -> str:
        """How the registry records an admin: a keyed hash."""
        return f"admin:{user_key(self.key, user_id)}"

    def shown(self, changed_by: str) -> str:
        """How `/mode` names whoever made a change."""
        for number, admin in enumerate(self.ids, 1):
            if changed_by == self.who(admin):
                return f"admin #{number}"
        return changed_by.split(":")[0]


class IsAdmin(Filter):
    def __init__(self, admins: Admins) -> None:
        self.admins = admins

    async def __call__(self, message: Message) -> bool:
        return message.from_user is not None and message.from_user.id in self.admins.ids


@dataclass(frozen=True)
class Asked:
    """What an admin's command asks for, before it becomes a `ModeChange`."""

    action: ModeAction
    mode: str
    fields: dict[str, object]


def parse_change(command: str, args: str | None) -> Asked | None:
    """`/set_model TONE gpt-4o` and friends, read; None when the command is not used as its usage line says."""
    action, _ = CHANGES[command]
    args = (args or "").strip()
    if not args:
        return None
    if action == "add":
        return Asked("add", _name_of(args).upper(), {"definition": args})
    mode, _, rest = _first_line_or_word(args) if action == "edit_prompt" else args.partition(" ")
    rest = rest.strip()
    match action:
        case "set_model" if rest and " " not in rest:
            return Asked(action, mode.upper(), {"model": rest})
        case "edit_prompt" if rest:
            return Asked(action, mode.upper(), {"prompt": rest})
        case "rollback" if not rest or rest.isdigit():
            return Asked(action, mode.upper(), {"version": int(rest)} if rest else {})
        case "enable" | "disable" if not rest:
            return Asked(action, mode.upper(), {})
    return None


async def on_change(
    message: Message, command: CommandObject, lang: str, bus: Bus, admins: Admins, analyses_on: bool
) -> None:
    if not analyses_on:  # only analyzers apply changes, and a deployment without an LLM runs none: say so now
        await message.reply(text("modes_need_an_llm", lang))
        return
    asked = parse_change(command.command, command.args)
    if asked is None:
        return await _usage(message, CHANGES[command.command][1], lang)
    assert message.from_user is not None
    change = ModeChange(
        request_id=correlation_id(admins.key, message.chat.id, message.message_id),
        action=asked.action,
        mode=asked.mode,
        requested_by=admins.who(message.from_user.id),
        reply=ReplyTo(chat_id=message.chat.id, message_id=message.message_id, ui_language=lang),
        **asked.fields,  # type: ignore[arg-type]
    )
    await bus.publish(SUBJECT_MODE_CHANGE, change, msg_id=change.request_id, stream=STREAM_ADMIN)
    if asked.action in ("add", "set_model", "edit_prompt"):
        quiet = message.chat.type != ChatType.PRIVATE  # a status: in a group, nobody's news
        checking = text("mode_checking", lang, mode=html.escape(change.mode or "…"))
        await message.reply(checking, disable_notification=quiet)


async def on_mode(message: Message, command: CommandObject, lang: str, bus: Bus, admins: Admins) -> None:
    name = (command.args or "").strip().upper()
    if not name:
        return await _usage(message, "/mode MODE", lang)
    registry = await ModeRegistry.open(bus)
    try:
        current = (await registry.get(name)).definition
    except UnknownMode:
        await message.reply(text("mode_unknown", lang, mode=html.escape(name)))
        return
    lines = [
        f"<b>{html.escape(current.name)}</b> · {html.escape(current.title(lang))} · v{current.version} · "
        f"{'on' if current.enabled else 'off'}",
        f"model <code>{html.escape(current.model)}</code> · max_tokens {current.max_tokens} · "
        f"temperature {current.temperature:g} · timeout {current.timeout:g}s",
        "fields: " + ", ".join(f"{f.name} ({f.kind})" for f in current.fields),
        "",
    ]
    for old in (await registry.history(name))[-10:]:
        lines.append(
            f"v{old.version} · {_when(old)} · {html.escape(admins.shown(old.changed_by))}: {html.escape(old.change)}"
        )
    await message.reply("\n".join(lines))


STATS_CHAT_MODES = 15
"""Chats' own modes `/stats` shows one by one, most tokens first: there may be thousands, and one message holds
4096 characters."""


async def on_stats(message: Message, lang: str, bus: Bus) -> None:
    """Per mode and version, the last 24 hours: calls, errors by reason, tokens, latency, cache hits; chats' own
    modes after them, the busiest ones each, the rest summed."""
    figures = await usage.last_day(bus)
    lines = [text("stats_header", lang)]
    lines += [_stats_line(f"{used.mode} v{used.version}", used.day) for used in figures if not is_chat_mode(used.mode)]
    per_chat_mode: dict[str, HourOfUse] = {}
    for used in figures:
        if is_chat_mode(used.mode):  # every version of one chat's mode together
            per_chat_mode.setdefault(used.mode, HourOfUse()).add(used.day)
    if per_chat_mode:
        lines.append(text("stats_chat_modes", lang))
        busiest = sorted(per_chat_mode.items(), key=lambda i: -(i[1].input_tokens + i[1].output_tokens))
        lines += [_stats_line(_stats_name(mode), day) for mode, day in busiest[:STATS_CHAT_MODES]]
        if rest := busiest[STATS_CHAT_MODES:]:
            summed = HourOfUse()
            for _, day in rest:
                summed.add(day)
            lines.append(_stats_line(f"… {len(rest)} more", summed))
    if len(lines) == 1:
        lines.append(text("stats_none", lang))
    await message.reply("\n".join(lines))


def _stats_line(name: str, day: HourOfUse) -> str:
    errors = sum(day.errors.values())
    reasons = ", ".join(f"{html.escape(r)} ×{n}" for r, n in sorted(day.errors.items(), key=lambda i: -i[1])[:4])
    p50, p95 = day.percentile(0.5), day.percentile(0.95)
    latency = f"p50 ≤{p50:g}s · p95 ≤{p95:g}s" if p50 is not None and p95 is not None else "no timed calls"
    return (
        f"<b>{html.escape(name)}</b>: {day.calls} calls · {errors} errors"
        + (f" ({reasons})" if reasons else "")
        + f" · tokens {day.input_tokens} in / {day.output_tokens} out · {latency} · cache hits {day.cache_hits}"
    )


async def on_chat_mode_policy(
    message: Message, command: CommandObject, lang: str, bus: Bus, admins: Admins, analyses_on: bool
) -> None:
    """Chats' own modes for the whole bot: on or off, the model they run on (tried first, as a mode's), how many a
    chat may have. With no argument, the policy now."""
    if not analyses_on:
        await message.reply(text("modes_need_an_llm", lang))
        return
    verb, _, value = (command.args or "").strip().partition(" ")
    value = value.strip()
    fields: dict[str, object]
    match verb.lower():
        case "":
            policy = await read_policy(bus)
            await message.reply(policy_said(policy.enabled, await model_for(bus, policy), policy.per_chat, lang))
            return
        case "on" | "off" if not value:
            fields = {"enabled": verb.lower() == "on"}
        case "model" if value and " " not in value:
            fields = {"model": "" if value.lower() == "default" else value}  # default: the DEFAULT mode's
        case "limit" if value.isdigit():
            fields = {"per_chat": int(value)}
        case _:
            return await _usage(message, "/chatmode_policy [on|off|model MODEL|model default|limit N]", lang)
    assert message.from_user is not None
    change = ChatModeChange(
        request_id=correlation_id(admins.key, message.chat.id, message.message_id),
        action="policy",
        requested_by=admins.who(message.from_user.id),
        reply=ReplyTo(chat_id=message.chat.id, message_id=message.message_id, ui_language=lang),
        **fields,  # type: ignore[arg-type]
    )
    await bus.publish(SUBJECT_CHAT_MODE_CHANGE, change, msg_id=change.request_id, stream=STREAM_CHAT_MODES)
    if fields.get("model"):
        await message.reply(text("mode_checking", lang, mode=html.escape(str(fields["model"]))))


REFUSALS = {"mode": "admin_only_mode", "stats": "admin_only_stats"}
"""What someone else is told, per command that only reads (a change: `admin_only`)."""


async def on_not_admin(message: Message, command: CommandObject, lang: str) -> None:
    await message.reply(text(REFUSALS.get(command.command, "admin_only"), lang))


def build_admin_router(admins: Admins) -> Router:
    """Admin commands for admins; a polite refusal of the same commands for everyone else."""
    router = Router(name="admin")
    is_admin = IsAdmin(admins)
    router.message.register(on_change, Command(*CHANGES), is_admin)
    router.message.register(on_mode, Command("mode"), is_admin)
    router.message.register(on_stats, Command("stats"), is_admin)
    router.message.register(on_chat_mode_policy, Command("chatmode_policy"), is_admin)
    router.message.register(on_not_admin, Command(*ADMIN_COMMANDS))
    return router


class AdminInbox:
    """What the admins are told: the results of their changes, and alerts (a mode rolled back on its own)."""

    def __init__(self, bot: Bot, admins: Admins) -> None:
        self.bot = bot
        self.admins = admins

    @consumes(SUBJECT_MODE_CHANGED, CONSUMER_ADMIN_REPLIES, stage="admin", stream=STREAM_ADMIN, max_attempts=8)
    async def on_result(self, result: ModeChangeResult, delivery: Delivery) -> None:
        if result.reply is None:
            return  # asked from the command line, which heard in-process
        lang = result.reply.ui_language
        action = next((command for command, (a, _) in CHANGES.items() if a == result.action), result.action)
        mode = html.escape(result.mode or "…")
        if result.accepted:
            model = html.escape(result.model or "")
            answer = text("mode_applied", lang, mode=mode, action=action, version=result.version, model=model)
        else:
            problems = "\n".join(f"• {html.escape(p)}" for p in result.problems)
            answer = text("mode_refused", lang, mode=mode, action=action, problems=problems)
        await self.bot.send_message(
            chat_id=result.reply.chat_id,
            text=answer,
            reply_parameters=ReplyParameters(message_id=result.reply.message_id, allow_sending_without_reply=True),
        )

    @consumes(SUBJECT_ALERT, CONSUMER_GATEWAY_ALERTS, stage="admin", stream=STREAM_ADMIN, max_attempts=8)
    async def on_alert(self, alert: AdminAlert, delivery: Delivery) -> None:
        log.warning("alert for the admins: %s (%s)", alert.kind, alert.mode)
        for admin in self.admins.ids:
            try:
                await self.bot.send_message(
                    chat_id=admin, text=text("mode_alert", "en", detail=html.escape(alert.detail))
                )
            except (TelegramForbiddenError, TelegramBadRequest) as exc:  # never started the bot, or blocked it
                log.warning("an admin cannot be told (%s)", type(exc).__name__)


def _stats_name(mode: str) -> str:
    """A mode as `/stats` names it: a chat's own as `NAME · chat 1a2b3c4d` (its key's start, never the chat)."""
    if not is_chat_mode(mode):
        return mode
    short, _, name = name_of(mode).partition(".")
    return f"{name} · chat {short}"


async def _usage(message: Message, usage: str, lang: str) -> None:
    await message.reply(text("admin_usage", lang, usage=html.escape(usage)))


def _first_line_or_word(args: str) -> tuple[str, str, str]:
    """`MODE` then the prompt: on the next lines, or after a space."""
    head, newline, tail = args.partition("\n")
    if newline:
        return head.strip(), newline, tail
    return args.partition(" ")


def _name_of(definition: str) -> str:
    try:
        return load(definition).name
    except ValueError:
        return ""


def _when(definition: ModeDefinition) -> str:
    if not definition.changed_at:
        return "shipped"
    return datetime.datetime.fromtimestamp(definition.changed_at, datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
