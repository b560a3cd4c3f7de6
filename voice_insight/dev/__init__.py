"""`voice-insight dev`: the whole stack on a laptop with the Telegram and OpenAI doubles and no token, and
`voice-insight dev send FILE`, which plays a user sending a voice note and prints the answer as the chat shows it.

For an analyzer's author or someone editing a mode's prompt: the production bot's token cannot be shared (Telegram
answers a second poller 409), and a test bot is one more thing to set up. The two commands are separate processes:
the stack writes where its Telegram double listens into its state folder (`state.py`), and `send` finds it there.
"""

from __future__ import annotations

import argparse

DEV_CHAT = 100001
"""The development user's private chat (a private chat's id is its user's)."""


def run(args: argparse.Namespace) -> int:
    """Imported on use: `send` needs neither NATS nor the doubles."""
    if args.verb == "send":
        from voice_insight.dev.send import send

        return send(args)
    from voice_insight.dev.stack import serve

    return serve(args)
