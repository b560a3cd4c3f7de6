"""`voice-insight modes ...`: the registry from the command line, through the same desk as the bot's admins.

Reading (`list`, `show`, `export`) needs only NATS; changing needs the OpenAI settings too, since a candidate
is validated (the model on the server, a canary call) before it is stored. Exit status: 0 done, 1 refused,
2 bad settings.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import os
import shlex
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

from analyzers.desk import ModeDesk
from analyzers.llm import ChatLLM, make_client
from infra.bus import Bus
from infra.domain.contracts import ModeAction, ModeChange
from infra.domain.definitions import ModeDefinition, dump, load
from infra.domain.registry import ModeRegistry, UnknownMode
from infra.ops.provision import provision
from infra.service.run import CONFIG_ERROR_EXIT, load_or_exit

READING = {"list", "show", "export"}
"""Verbs that only read: they need NATS and nothing else. (The parser is `voice_insight.cli`'s.)"""


def run(args: argparse.Namespace) -> int:
    settings = load_or_exit("modes", ())
    if args.verb not in READING and not settings.analyses_possible:
        print("voice-insight modes: OPENAI_API_KEY is not set (a server of your own may need none)", file=sys.stderr)
        return CONFIG_ERROR_EXIT

    async def main() -> int:
        bus = await Bus.connect(
            settings.nats_servers,
            name="modes-cli",
            replicas=settings.jetstream_replicas,
            wait=10,
            **settings.nats_credentials,
        )
        try:
            await provision(bus)  # as the admin: a first `modes` command on a fresh NATS finds the shipped modes
            registry = await ModeRegistry.open(bus)
            if args.verb in READING:
                return await read(registry, args)
            llm = ChatLLM(make_client(settings.llm_api_key, settings.openai_base_url), settings.llm_timeout)
            try:
                return await change(ModeDesk(registry, llm), registry, args)
            finally:
                await llm.client.close()
        finally:
            await bus.close(grace=1)

    return asyncio.run(main())


async def read(registry: ModeRegistry, args: argparse.Namespace) -> int:
    if args.verb == "list":
        for d in await registry.all():
            state = "on " if d.enabled else "off"
            print(f"{d.name:<16} {state} v{d.version:<3} {d.model:<20} {_when(d)} {d.changed_by}: {d.change}")
        return 0
    if args.verb == "show":
        try:
            current = (await registry.get(args.mode.upper())).definition
        except UnknownMode:
            print(f"no mode {args.mode!r}", file=sys.stderr)
            return 1
        print(dump(current))
        print("# versions, oldest first:")
        for d in await registry.history(current.name):
            print(f"#   v{d.version:<3} {_when(d)} {d.changed_by}: {d.change}")
        return 0
    for d in await registry.all():
        print(await asyncio.to_thread(_write, Path(args.folder) / f"{d.name}.toml", dump(d)))
    return 0


async def change(desk: ModeDesk, registry: ModeRegistry, args: argparse.Namespace) -> int:
    requests: list[tuple[ModeAction, str, dict[str, object]]] = []
    match args.verb:
        case "add":
            requests.append(("add", "", {"definition": await _read(args.file)}))
        case "import":
            names = {d.name for d in await registry.all()}
            for file in args.files:
                text = await _read(file)
                name = _name_in(text)
                requests.append(("replace" if name in names else "add", name, {"definition": text}))
        case "set-model":
            requests.append(("set_model", args.mode, {"model": args.model}))
        case "edit":
            try:
                current = (await registry.get(args.mode.upper())).definition
            except UnknownMode:
                print(f"no mode {args.mode!r}", file=sys.stderr)
                return 1
            edited = await asyncio.to_thread(_edit, dump(current))
            requests.append(("replace", current.name, {"definition": edited}))
        case "enable" | "disable":
            requests.append((args.verb, args.mode, {}))
        case "rollback":
            requests.append(("rollback", args.mode, {"version": args.version}))
    status = 0
    for action, mode, fields in requests:
        change = ModeChange(
            request_id=uuid.uuid4().hex,
            action=action,
            mode=mode.upper(),
            requested_by="cli",
            **fields,  # type: ignore[arg-type]
        )
        result = await desk.apply(change)
        if result.accepted:
            print(f"{result.mode}: {action} done: v{result.version}, model {result.model}")
        else:
            status = 1
            print(f"{result.mode or mode}: {action} refused:", file=sys.stderr)
            for problem in result.problems:
                print(f"  - {problem}", file=sys.stderr)
    return status


async def _read(file: str) -> str:
    return await asyncio.to_thread(Path(file).read_text, encoding="utf-8")


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def _name_in(text: str) -> str:
    try:
        return load(text).name
    except ValueError:
        return ""  # the desk says why


def _edit(text: str) -> str:
    """`text` in the user's editor; what they saved."""
    with tempfile.NamedTemporaryFile("w", suffix=".toml", delete=False, encoding="utf-8") as file:
        file.write(text)
    try:
        editor = shlex.split(os.environ.get("VISUAL") or os.environ.get("EDITOR") or "vi")
        subprocess.run([*editor, file.name], check=True)
        return Path(file.name).read_text(encoding="utf-8")
    finally:
        os.unlink(file.name)


def _when(definition: ModeDefinition) -> str:
    if not definition.changed_at:
        return "shipped".ljust(16)
    return datetime.datetime.fromtimestamp(definition.changed_at).strftime("%Y-%m-%d %H:%M")
