"""The formatter: joins a note's transcript and analyses by correlation ID and answers through the Bot API,
exactly once. What it consumes and does on failure: `formatter.service`; the steps of an answer:
`formatter.answer`."""
