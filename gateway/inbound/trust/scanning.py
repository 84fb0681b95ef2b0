"""What the outside scanners (clamd, rspamd) share: the error that says one cannot answer now.

A scanner that cannot answer never means "clean": the message waits and is retried (fail
closed), unless the admin chose `fail_open` for that scanner.
"""

from __future__ import annotations

from gateway.errors import GatewayError


class ScannerUnavailable(GatewayError):
    """The scanner could not give a verdict now (unreachable, timed out, refused the input)."""

    def __init__(self, scanner: str, detail: str) -> None:
        self.scanner = scanner
        self.detail = detail
        super().__init__(f"{scanner} unavailable: {detail}")
