"""Read-only listings of what the gateway holds, for people: the CLI prints them, an HTTP API
can return them. One module per area: `accounts`, `documents`, `inbound`, `outbound`.

Each function runs its queries in one read transaction and returns plain rows (frozen
dataclasses, no ORM objects); a row's fields, in order, are the keys of the matching
`gateway … --json` listing. Nothing here writes.
"""
