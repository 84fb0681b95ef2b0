"""Per-delivery bounce addresses (VERP), protected by an HMAC tag.

Why: a bounce can come back hours after the partner's server accepted a delivery (R17), as
a new message to the envelope sender.  Giving each delivery its own envelope sender,
``bounce+<id>-<tag>@<domain>``, tells us which delivery bounced without trusting anything
in the bounce's body; the tag (an HMAC of the id) means nobody can forge a bounce that
marks an arbitrary delivery as bounced.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re

from gateway.routing.addresses import split_address
from gateway.routing.slugs import DOMAIN_RE

TAG_LENGTH = 10  # base32 characters: 50 bits, far beyond what online guessing can reach
_PREFIX_RE = re.compile(r"[a-z0-9](?:[a-z0-9._-]{0,30}[a-z0-9])?")
_MAX_ID_DIGITS = 19  # fits a BIGINT; the pattern below also refuses leading zeros


class BounceAddresses:
    """Make and recognise the envelope senders of outbound deliveries."""

    def __init__(self, secret: bytes, domain: str, local_prefix: str = "bounce") -> None:
        # An empty key would let anyone who knows the scheme compute valid tags.
        if not isinstance(secret, bytes | bytearray) or not secret:
            raise ValueError("the VERP secret must be non-empty bytes (use 32 random bytes)")
        host = domain.strip().lower().rstrip(".") if isinstance(domain, str) else ""
        if not DOMAIN_RE.fullmatch(host):
            raise ValueError(f"not a valid bounce domain: {domain!r}")
        prefix = local_prefix.strip().lower() if isinstance(local_prefix, str) else ""
        if not _PREFIX_RE.fullmatch(prefix):
            raise ValueError(f"not a valid bounce local-part prefix: {local_prefix!r}")
        self._secret = bytes(secret)
        self.domain = host
        self.local_prefix = prefix
        self._local_re = re.compile(
            re.escape(prefix)
            + rf"\+(0|[1-9][0-9]{{0,{_MAX_ID_DIGITS - 1}}})-([a-z2-7]{{{TAG_LENGTH}}})"
        )

    def _tag(self, delivery_id: int) -> str:
        digest = hmac.new(self._secret, str(delivery_id).encode("ascii"), hashlib.sha256)
        return base64.b32encode(digest.digest()).decode("ascii").lower()[:TAG_LENGTH]

    def for_delivery(self, delivery_id: int) -> str:
        """The envelope sender (MAIL FROM) of one delivery."""
        if isinstance(delivery_id, bool) or not isinstance(delivery_id, int) or delivery_id < 0:
            raise ValueError(f"delivery id must be a non-negative integer, not {delivery_id!r}")
        if len(str(delivery_id)) > _MAX_ID_DIGITS:
            raise ValueError(f"delivery id {delivery_id} is too large for a bounce address")
        return f"{self.local_prefix}+{delivery_id}-{self._tag(delivery_id)}@{self.domain}"

    def delivery_of(self, address: str) -> int | None:
        """The delivery id if `address` is one of ours with a valid tag, else None.

        Local part and domain compare case-insensitively (some MTAs change case); the tag
        is compared in constant time.  Never raises.
        """
        if not isinstance(address, str) or any(ord(c) < 32 or ord(c) == 127 for c in address):
            return None
        parts = split_address(address)
        if parts is None or parts[1] != self.domain:
            return None
        match = self._local_re.fullmatch(parts[0])
        if match is None:
            return None
        delivery_id = int(match.group(1))
        if not hmac.compare_digest(self._tag(delivery_id), match.group(2)):
            return None
        return delivery_id
