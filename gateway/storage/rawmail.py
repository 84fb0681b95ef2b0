"""Reading a raw message back from the spool (R4: the raw message is always kept).

The inbound spool (`gateway/inbound/spool.py`) appends messages to segment files under the
storage folder; each `inbound_messages` row says where its bytes are (segment, offset,
size). The filing stage reads them to extract documents, the forwarder to attach the
original to a bot-mail forward: so reading lives here, below both stages.
"""

from __future__ import annotations

from pathlib import Path


def read_spooled(directory: Path, segment: str, offset: int, size: int) -> bytes:
    """The `size` bytes at `offset` of spool segment `segment` under `directory`."""
    with open(directory / segment, "rb") as f:
        f.seek(offset)
        data = f.read(size)
    if len(data) != size:
        raise OSError(f"spool segment {segment} is short: wanted {size} bytes at {offset}")
    return data
