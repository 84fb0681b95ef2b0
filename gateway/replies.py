"""Every SMTP reply the gateway sends, in one table, with its enhanced status code (RFC 3463).

Refusals of the sender's mistakes are 5xx; our own failures are always 4xx so that the
sending MTA keeps the message and retries instead of bouncing it (R8).
"""

from __future__ import annotations

from enum import Enum


class Reply(Enum):
    OK = "250 2.0.0 OK"
    SENDER_OK = "250 2.1.0 Sender OK"
    RECIPIENT_OK = "250 2.1.5 Recipient OK"
    QUEUED = "250 2.0.0 OK: queued as {queue_id}"
    SHUTTING_DOWN = "421 4.3.2 {hostname} Service shutting down, try again later"
    TOO_MANY_RECIPIENTS = "452 4.5.3 Too many recipients (at most {limit} per message)"
    INTERNAL_ERROR = "451 4.3.0 Temporary failure, message not accepted; please try again later"
    DIRECTORY_UNAVAILABLE = "451 4.3.0 Temporary failure looking up <{address}>; try again later"
    RELAY_DENIED = "550 5.7.1 <{address}>: Relay access denied, we only accept mail for our domains"
    UNKNOWN_RECIPIENT = "550 5.1.1 <{address}>: Recipient address rejected: recipient unknown"
    BAD_RECIPIENT_SYNTAX = "553 5.1.3 <{address}>: Bad recipient address syntax"
    BAD_SENDER_SYNTAX = "553 5.1.7 Bad sender address syntax"
    MESSAGE_TOO_BIG = "552 5.3.4 Message size exceeds fixed maximum message size ({limit} bytes)"
    HEADER_TOO_BIG = "552 5.3.4 Message header exceeds fixed limits: {why}"
    LINE_TOO_LONG = "500 5.5.2 Line too long (see RFC 5321 4.5.3.1.6)"
    SYNTAX_ERROR = "500 5.5.2 Syntax error, command unrecognised"
    START_DATA = "354 End data with <CR><LF>.<CR><LF>"
    NEED_RCPT = "503 5.5.1 Error: need RCPT command"
    DATA_SYNTAX = "501 5.5.4 Syntax: DATA"
    DATA_MEMORY_BUSY = "451 4.3.2 Too much mail data in progress, try again later"
    BAD_HELO = "501 5.5.2 Syntax: {verb} hostname"
    BAD_RECIPIENT_CHARACTERS = "553 5.1.3 Bad recipient address syntax"
    TLS_ALREADY_ACTIVE = "554 5.5.1 Error: TLS already active"
    AUTH_NOT_ENABLED = "503 5.5.1 Error: authentication not enabled"
    # The same answer for every address: VRFY must not tell a harvester what exists.
    CANNOT_VRFY = "252 2.0.0 Cannot VRFY user, but will accept message and attempt delivery"
    VRFY_SYNTAX = "501 5.5.4 Syntax: VRFY address"
    # Limits per client and session (gateway/inbound/anvil.py; Postfix's texts).
    TOO_MANY_SESSIONS = "421 4.7.0 {hostname} Error: too many sessions, try again later"
    TOO_MANY_CONNECTIONS = "421 4.7.0 {hostname} Error: too many connections from {client}"
    CONNECTION_RATE_EXCEEDED = (
        "421 4.7.0 {hostname} Error: too many connection attempts from {client}"
    )
    MESSAGE_RATE_EXCEEDED = "450 4.7.1 Error: too much mail from {client}"
    TOO_MANY_ERRORS = "421 4.7.0 {hostname} Error: too many errors"
    # aiosmtpd ends a session at its fifth unknown verb (what a client that does not speak
    # SMTP sends): the closing reply must be a 421, not its 502, so that a sender retries.
    TOO_MANY_UNKNOWN_COMMANDS = "421 4.7.0 {hostname} Error: too many unrecognised commands"
    TIMEOUT_EXCEEDED = "421 4.4.2 {hostname} Error: timeout exceeded"

    def format(self, **values: object) -> str:
        return self.value.format(**values)


# aiosmtpd answers some conditions itself, without enhanced codes; the server maps those
# texts onto this table (see `GatewaySMTP.push`).
AIOSMTPD_REPLACEMENTS: dict[str, Reply] = {
    "552 Error: Too much mail data": Reply.MESSAGE_TOO_BIG,
    "552 Error: message size exceeds fixed maximum message size": Reply.MESSAGE_TOO_BIG,
    "500 Line too long (see RFC5321 4.5.3.1.6)": Reply.LINE_TOO_LONG,
    "502 5.5.1 Too many unrecognized commands, goodbye.": Reply.TOO_MANY_UNKNOWN_COMMANDS,
}
