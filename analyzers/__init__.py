"""Analyzers: one process per mode, and adding a mode changes nothing else.

Consumes:
- `voice.transcript` (durable `analyzer-<MODE>`, its own per mode: every mode sees every transcript): the mode's
  prompt over the transcript, through the LLM (`service`, `llm`), unless the note asked for other modes, is
  answered already or past its deadline;
- `admin.mode.change` (`mode-registrar`, shared by all analyzers): a mode's change validated (the model on the
  server, a canary call) and stored in the registry (`desk`).

Publishes:
- `voice.analysis.<MODE>` (`Analysis`): the result, or one with `error` set, so the formatter need not wait;
- `admin.mode.changed`: the result of a change, for the admin who asked;
- `admin.alert`: a new version of the mode that kept failing was rolled back on its own (`mode_rolled_back`);
- the mode's heartbeat in `voice-modes` (KV): the gateway and formatter know which modes are live.

On failure: an LLM that fails or times out gives an `Analysis` with `error` at once (the answer says which mode
is missing, and why); a transcript that fails on every attempt does too; the daily token budget stops analyses
with a note in the answer.
"""
