"""The gateway: the Telegram bot. Takes voice notes in, stores them, and answers the chat's commands.

Consumes:
- `telegram.update` (durable `gateway`, stream UPDATES): each update through aiogram's routers (`dispatch`):
  voice notes to `intake`, commands and buttons to `handlers`, `chat_settings`, `buttons`, `admin`;
- `admin.mode.changed` and `admin.alert` (`gateway-admin`, `gateway-alerts`): results and alerts for the admins.

Publishes:
- `telegram.update`, from long polling (`updates.UpdatePoller`) or a webhook (`webhook`): Telegram's updates
  land in a work-queue stream first, so any gateway replica may handle them and none is lost on a restart;
- `voice.audio` or `voice.audio.queued` (`AudioReceived`): a note taken in, its bytes in the Object Store;
- `voice.rerun` and `voice.transcript` again: a mode asked for by a button under an answer;
- `admin.mode.change`: an admin's change of a mode, for the registrar to validate.

On failure: a note refused at intake (too long, too big, over a limit, a failed download) turns its status
message into the reason; an update that fails eight times is answered with an apology (`UpdateHandler.give_up`);
flood control is waited out (`Retry`), a blocked bot or a request Telegram refuses is rejected.
"""
