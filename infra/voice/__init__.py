"""The bot's voice: what users read and press, and the one Bot API client that says it.

`texts` (every sentence in every language), `buttons` (the keyboards under an answer), `transcript_files` (a
long transcript as a document) and `telegram` (aiogram's bot with flood control). It may import
`infra.domain` and `infra.runtime`; the bus and a service's life are not its business.
"""
