"""The one base of the gateway's own errors.

Every error the gateway raises on purpose (bad configuration, a refused address, a queue
transition that does not hold, an IMAP mailbox that cannot be read…) derives from
`GatewayError`, so that the CLI turns any of them into one line and exit status 1, and a
caller can tell our refusals from a bug.
"""

from __future__ import annotations


class GatewayError(Exception):
    """An error of the gateway's own, with a message meant for the person who reads it."""
