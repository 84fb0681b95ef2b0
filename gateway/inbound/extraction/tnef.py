"""Outlook's ``winmail.dat`` (TNEF): checked to be safe for tnefparse, then opened.

tnefparse trusts the counts written in the stream, so :func:`_tnef_problem` walks the stream
first and refuses forged input; a TNEF that cannot be decoded safely is filed as is.
"""

from collections.abc import Mapping
from types import MappingProxyType
from typing import Final

from tnefparse import TNEF

from gateway.inbound.extraction.names import add_document
from gateway.inbound.extraction.run import ConsiderFile, Run, brief, guard
from gateway.mail.names import clean_filename, sanitize_filename
from gateway.mail.sniff import TNEF_MAGIC, sniff_media_type
from gateway.mail.text import bytes_to_text

_MAX_TNEF_OBJECTS: Final = 5000
_MAX_MAPI_PROPERTIES: Final = 4096
_MAX_TNEF_EMBEDDING: Final = 4
_IMESSAGE_SIG: Final = b"\x07\x03\x02\x00\x00\x00\x00\x00\xc0\x00\x00\x00\x00\x00\x00\x46"
_MAPI_ATTACH_DATA_OBJ: Final = 0x3701
_MAPI_ATTACH_LONG_FILENAME: Final = 0x3707
_MAPI_ATTACH_FILENAME: Final = 0x3704
_MAPI_DISPLAY_NAME: Final = 0x3001
_MAPI_ATTACH_MIME_TAG: Final = 0x370E
_MAPI_FIXED_SIZES: Final[Mapping[int, int]] = MappingProxyType(
    {
        0x02: 2,
        0x0B: 2,
        0x03: 4,
        0x04: 4,
        0x0A: 4,
        0x05: 8,
        0x06: 8,
        0x07: 8,
        0x14: 8,
        0x40: 8,
        0x48: 16,
    }
)
_MAPI_VARIABLE_TYPES: Final = frozenset({0x00, 0x0D, 0x1E, 0x1F, 0x102})
_TNEF_NAMES: Final = frozenset({"winmail.dat", "win.dat"})


def is_tnef(base: str, media_type: str) -> bool:
    """Whether a file (its lower-cased base name, its sniffed type) is a TNEF to open."""
    return media_type == "application/ms-tnef" or base in _TNEF_NAMES


def open_tnef(
    run: Run, content: bytes, name: str | None, origin: str, depth: int, consider: ConsiderFile
) -> None:
    """Take the attachments out of an Outlook winmail.dat; keep it as is when it can't be.

    Each attachment goes to ``consider`` (the walk), which opens it in turn if need be.
    """
    shown = clean_filename(name or "", 80) or "winmail.dat"
    if depth >= run.limits.max_nesting_depth:
        run.note(
            f"TNEF '{shown}' is nested more than {run.limits.max_nesting_depth} levels "
            "deep; filed as is"
        )
        add_document(run, content, name or "winmail.dat", "application/ms-tnef", origin)
        return
    problem = _tnef_problem(run, content, 0)
    tnef = None
    if problem is None:
        try:
            tnef = TNEF(content, do_checksum=False)
        except Exception as exc:
            problem = brief(exc)
    if tnef is None:
        run.note(f"TNEF '{shown}' could not be decoded ({problem}); filed as is")
        add_document(run, content, name or "winmail.dat", "application/ms-tnef", origin)
        return
    if not _tnef_attachments(run, tnef, depth, shown, consider):
        has_body = bool(guard(tnef.has_body, False))
        run.note(
            f"TNEF '{shown}' holds {'only the message body' if has_body else 'nothing'}; not filed"
        )


def _tnef_attachments(run: Run, tnef: TNEF, depth: int, shown: str, consider: ConsiderFile) -> bool:
    """File the attachments of a decoded TNEF; return whether there were any."""
    found = False
    for attachment in list(getattr(tnef, "attachments", [])):
        embedded = getattr(attachment, "embed", None)
        if isinstance(embedded, TNEF):
            found = True
            if depth + 1 >= run.limits.max_nesting_depth:
                run.note(f"TNEF '{shown}': embedded Outlook item nested too deep; not opened")
            elif not _tnef_attachments(run, embedded, depth + 1, shown, consider):
                run.note(f"TNEF '{shown}': embedded Outlook item has no attachment; not filed")
            continue
        data = getattr(attachment, "data", b"")
        data = data if isinstance(data, bytes) else b""
        name = _tnef_attachment_name(attachment)
        if not data:
            if name:
                found = True
                run.refuse(
                    sanitize_filename(name, "attachment", run.limits.max_filename_bytes),
                    "empty attachment (0 bytes): nothing to file",
                )
            continue
        found = True
        declared = _mapi_text(attachment, _MAPI_ATTACH_MIME_TAG)
        media_type = sniff_media_type(data, declared, name)
        consider(run, data, name, media_type, "tnef", depth + 1)
    return found


def _tnef_attachment_name(attachment: object) -> str | None:
    """Long file name when present, else the 8.3 title; decoded without trusting tnefparse."""
    for prop_id in (_MAPI_ATTACH_LONG_FILENAME, _MAPI_ATTACH_FILENAME, _MAPI_DISPLAY_NAME):
        text = _mapi_text(attachment, prop_id)
        if text:
            return text
    title = getattr(attachment, "_name", b"")
    text = bytes_to_text(title) if isinstance(title, bytes) else str(title or "")
    text = text.replace("\x00", "").strip()
    return text or None


def _mapi_text(attachment: object, prop_id: int) -> str | None:
    """A MAPI text property of an attachment, None when absent or blank."""
    for prop in getattr(attachment, "mapi_attrs", []):
        if getattr(prop, "name", None) != prop_id:
            continue
        try:
            value: object = prop.data  # decoded by tnefparse on access: garbage may raise
        except Exception:
            continue
        if isinstance(value, bytes):
            value = bytes_to_text(value)
        if isinstance(value, str):
            value = value.replace("\x00", "").strip()
            if value:
                return value
    return None


def _tnef_problem(run: Run, data: bytes, embedding: int) -> str | None:
    """Why tnefparse must not be given this stream, or None when it is safe.

    tnefparse trusts the counts written in the stream: a forged MAPI property count makes it
    loop billions of times without raising, and every attribute costs a copy of the rest of
    the stream.  This walks the stream the way tnefparse will and rejects such input.
    """
    if embedding > _MAX_TNEF_EMBEDDING:
        return "Outlook items embedded too deeply"
    if len(data) < 6 or not data.startswith(TNEF_MAGIC):
        return "no TNEF signature"
    offset, objects, size = 6, 0, len(data)
    while offset + 12 < size:
        objects += 1
        if objects > _MAX_TNEF_OBJECTS:
            return f"more than {_MAX_TNEF_OBJECTS} attributes"
        run.tnef_budget -= size - offset
        if run.tnef_budget < 0:
            return "too large to decode"
        level = data[offset]
        attr_id = int.from_bytes(data[offset + 1 : offset + 3], "little")
        length = int.from_bytes(data[offset + 5 : offset + 9], "little")
        end = min(size, offset + length + 11)
        body = data[offset + 9 : end - 2]
        try:
            if (level == 2 and attr_id == 0x9005) or (level != 2 and attr_id == 0x9003):
                _check_mapi(run, body, 0, embedding)  # attachment / message MAPI properties
            elif level != 2 and attr_id == 0x9004 and len(body) >= 4:
                rows = int.from_bytes(body[:4], "little")
                position = 4
                for _ in range(min(rows, len(body) // 4 + 1)):
                    if position + 4 > len(body):
                        break
                    position = _check_mapi(run, body, position, embedding)
        except ValueError as exc:
            return str(exc)
        offset = end
    return None


def _check_mapi(run: Run, data: bytes, offset: int, embedding: int) -> int:
    """Walk one MAPI property block like tnefparse's decode_mapi; raise on forged counts."""
    size = len(data)
    if offset + 4 > size:
        return size
    count = int.from_bytes(data[offset : offset + 4], "little")
    offset += 4
    if count > _MAX_MAPI_PROPERTIES:
        raise ValueError(f"forged MAPI property count {count}")
    for _ in range(count):
        if offset + 4 > size:
            return size
        prop_type = int.from_bytes(data[offset : offset + 2], "little")
        prop_id = int.from_bytes(data[offset + 2 : offset + 4], "little")
        offset += 4
        if prop_id >= 0x8000:
            offset += 16
            if offset + 8 > size:
                return size
            kind = int.from_bytes(data[offset : offset + 4], "little")
            offset += 4
            if kind == 0:
                offset += 4
            else:
                name_length = int.from_bytes(data[offset : offset + 4], "little")
                offset += 4 + name_length + (-name_length % 4)
        multi = bool(prop_type & 0x1000)
        prop_type &= ~0x1000
        values = 1
        if multi:
            if offset + 4 > size:
                return size
            values = int.from_bytes(data[offset : offset + 4], "little")
            offset += 4
        fixed = _MAPI_FIXED_SIZES.get(prop_type)
        if fixed is not None:
            if values * fixed > max(0, size - offset):
                raise ValueError(f"forged MAPI value count {values}")
            offset += values * fixed
            if values % 2 and prop_type in (0x02, 0x0B):
                offset += 2
            continue
        if prop_type not in _MAPI_VARIABLE_TYPES:
            return size  # tnefparse stops at an unknown type
        for _value in range(values):
            items = 1
            if not multi:
                if offset + 4 > size:
                    return size
                items = int.from_bytes(data[offset : offset + 4], "little")
                offset += 4
            chunks: list[bytes] = []
            for _item in range(items):
                if offset + 4 > size:
                    return size
                length = int.from_bytes(data[offset : offset + 4], "little")
                offset += 4
                padded = length + (-length % 4)
                chunks.append(data[offset : offset + padded].rstrip(b"\x00"))
                offset += padded
            joined = b"".join(chunks)
            if prop_id == _MAPI_ATTACH_DATA_OBJ and joined.startswith(_IMESSAGE_SIG):
                problem = _tnef_problem(run, joined[len(_IMESSAGE_SIG) :], embedding + 1)
                if problem:
                    raise ValueError(f"embedded Outlook item: {problem}")
    return offset
