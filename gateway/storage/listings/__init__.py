"""Read-only listings of what the gateway holds, for people: the CLI prints them, an HTTP API
can return them (/metrics already reads `queues`). One module per area: `accounts`,
`documents`, `inbound`, `outbound`, `queues` (the work queues as a whole, and the
processes working on them).

Each function runs its queries in one read transaction and returns plain rows (frozen
dataclasses, no ORM objects); a row's fields, in order, are the keys of the matching
`gateway … --json` listing. Nothing here writes.
"""
