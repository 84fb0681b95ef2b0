"""The `gateway` command, a module per noun (cabinets, documents, deliveries, imap, …).

`main` (the console script and `python -m gateway`) and the root group `cli` live in
`gateway.cli.main`; what every verb shares (`Context`, the -c and --json options) in
`gateway.cli.context`; printing a listing as a table or JSON in `gateway.cli.output`. The
verbs only parse arguments and print: listings come from `gateway.storage.listings`, run
loops from their stage.
"""

from gateway.cli.main import cli, main

__all__ = ["cli", "main"]
