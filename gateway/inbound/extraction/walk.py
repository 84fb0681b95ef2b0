"""The MIME walk: which parts of a message are documents (the rules in the package docstring).

Forwarded mail is opened here too (it is walked like the message itself); TNEF and ZIP
containers are handed to :mod:`.tnef` and :mod:`.archives`, which give their members back to
:func:`_consider_file`.
"""

import binascii
import io
from collections.abc import Callable, Iterable
from email import policy as email_policy
from email.generator import BytesGenerator
from email.message import Message
from email.policy import Policy
from typing import Final

from gateway.inbound.extraction.archives import expand_zip, is_zip_archive
from gateway.inbound.extraction.decoding import b64decode_lenient, has_uuencode, uudecode_blocks
from gateway.inbound.extraction.headers import (
    PARSING_POLICY,
    content_id_of,
    content_type_of,
    describe_defect,
    disposition_of,
    filename_of,
    header_defects,
    header_text,
    message_id_of,
    sender_of,
    subject_of,
)
from gateway.inbound.extraction.mime import parse_message
from gateway.inbound.extraction.model import ExtractedDocument, Extraction, ExtractionLimits
from gateway.inbound.extraction.names import (
    BINHEX_TYPE,
    add_document,
    binhex_name,
    eml_name,
    is_binhex,
)
from gateway.inbound.extraction.parts import (
    MAX_MIME_DEPTH,
    payload_bytes,
    referenced_cids,
    repair_multipart,
    subparts,
)
from gateway.inbound.extraction.run import Run, brief, guard
from gateway.inbound.extraction.tnef import is_tnef, open_tnef
from gateway.mail.names import clean_filename, last_path_component, sanitize_filename
from gateway.mail.sniff import sniff_media_type

_DEFAULT_LIMITS: Final = ExtractionLimits()
_SMALL_IMAGE_BYTES: Final = 10 * 1024  # an unnamed inline image below this is a logo
_FORWARD_TYPES: Final = frozenset({"message/rfc822", "message/global"})
_BODY_TEXT_TYPES: Final = frozenset({"text/plain", "text/html"})
_BODY_LIKE_TYPES: Final = frozenset(
    {
        "text/calendar",
        "text/enriched",
        "text/richtext",
        "text/watch-html",
        "text/x-watch-html",
        "text/x-amp-html",
        "text/rfc822-headers",
    }
)
_SIGNATURE_TYPES: Final = frozenset(
    {
        "application/pkcs7-signature",
        "application/x-pkcs7-signature",
        "application/pgp-signature",
    }
)


def extract_documents(raw: bytes, limits: ExtractionLimits = _DEFAULT_LIMITS) -> Extraction:
    """Return the documents of one received message; never raises on any input bytes."""
    data = bytes(raw) if not isinstance(raw, bytes) else raw
    run = Run(limits=limits)
    msg: Message | None = None
    try:
        msg = parse_message(data, PARSING_POLICY)
    except RecursionError:
        run.note("message: MIME structure nested too deeply to be parsed; kept whole")
    except Exception as exc:
        run.note(f"message: could not be parsed as MIME ({brief(exc)}); kept whole")

    message_id = subject = sender = None
    if msg is not None:
        message_id = guard(lambda: message_id_of(msg), None)
        subject = guard(lambda: subject_of(msg), None)
        sender = guard(lambda: sender_of(msg), None)
        for name in ("from", "subject", "date"):
            _note_defects(run, f"message header {name.title()}", header_defects(msg, name))
        try:
            _walk_message(run, msg, depth=0, origin=None, where="message")
        except Exception as exc:  # last resort: keep what was found, say why it stopped
            run.note(
                f"message: extraction stopped early ({brief(exc)}); documents found so far are kept"
            )

    if run.dropped:
        limit = limits.max_documents
        run.refuse(
            f"({run.dropped} more documents)",
            f"too many documents: {run.dropped} more document(s) were not filed; "
            f"a message may contain at most {limit} documents",
        )
    if not run.documents and not run.refused:
        run.documents.append(
            ExtractedDocument(
                filename=eml_name(subject, None, limits.max_filename_bytes),
                media_type="message/rfc822",
                content=data,
                origin="body",
            )
        )
    if run.suppressed_defects:
        run.defects.append(f"... and {run.suppressed_defects} more defects not listed")
    return Extraction(
        documents=run.documents,
        refused=run.refused,
        message_id=message_id,
        subject=subject,
        sender=sender,
        defects=run.defects,
    )


def _walk_message(run: Run, msg: Message, depth: int, origin: str | None, where: str) -> None:
    """Visit every part of one message (iteratively: hostile nesting cannot blow the stack)."""
    cids = referenced_cids(msg)
    stack: list[tuple[Message, str, int, str]] = [(msg, "", 0, "")]
    while stack:
        part, path, level, parent = stack.pop()
        ctype, declared = content_type_of(part)
        label = f"{where}, part {path} ({ctype})" if path else where
        _note_defects(run, label, getattr(part, "defects", ()))
        _note_defects(run, label, header_defects(part, "content-type"))
        _note_defects(run, label, header_defects(part, "content-disposition"))
        try:
            if ctype in _FORWARD_TYPES:
                _handle_forwarded(run, part, depth, label)
                continue
            if part.is_multipart():
                if level >= MAX_MIME_DEPTH:
                    run.note(
                        f"{label}: MIME parts nested more than {MAX_MIME_DEPTH} levels "
                        "deep; deeper parts ignored"
                    )
                    continue
                children = [c for c in subparts(part) if isinstance(c, Message)]
                subtype = ctype.partition("/")[2]
                for index in range(len(children) - 1, -1, -1):
                    child_path = f"{path}.{index + 1}" if path else str(index + 1)
                    stack.append((children[index], child_path, level + 1, subtype))
                continue
            if ctype.startswith("multipart/"):
                repaired = repair_multipart(run, part, ctype, label)
                if repaired is not None and level < MAX_MIME_DEPTH:
                    stack.append((repaired, path, level + 1, parent))
                continue
            if ctype.startswith("message/"):
                continue  # delivery/disposition reports and the like: not documents
            _handle_leaf(run, part, ctype, declared, parent, cids, depth, origin, label)
        except Exception as exc:  # one broken part must not cost the others
            run.note(f"{label}: could not be processed ({brief(exc)})")


def _handle_leaf(
    run: Run,
    part: Message,
    ctype: str,
    declared: str | None,
    parent: str,
    cids: frozenset[str],
    depth: int,
    origin: str | None,
    label: str,
) -> None:
    """Decide whether one non-container MIME part is a document (see the package docstring)."""
    filename = filename_of(part)
    disposition = disposition_of(part)
    if (
        filename is None
        and disposition != "attachment"
        and (
            ctype in _BODY_TEXT_TYPES
            or ctype in _BODY_LIKE_TYPES
            or (parent == "alternative" and ctype.startswith("text/"))
        )
    ):
        if ctype == "text/plain":
            _uuencoded_files(run, part, depth, origin, label)
        return
    if parent == "signed" and ctype in _SIGNATURE_TYPES:
        return
    if parent == "encrypted" and ctype == "application/pgp-encrypted":
        return
    notes: list[str] = []
    content = payload_bytes(part, notes)
    for text in notes:
        run.note(f"{label}: {text}")
    if not content:
        if filename is not None or disposition == "attachment":
            name = sanitize_filename(filename, "attachment", run.limits.max_filename_bytes)
            run.refuse(name, "empty attachment (0 bytes): nothing to file")
        return
    media_type = sniff_media_type(content, declared, filename)
    where = origin or ("inline" if disposition == "inline" else "attachment")
    if media_type.startswith("image/"):
        content_id = content_id_of(part)
        if content_id and content_id in cids:
            threshold = run.limits.cid_image_document_bytes
            if len(content) < threshold:
                return  # a logo or a picture of the layout
            # A photo pasted into the body (a receipt taken with a phone) is a document.
            where = f"cid:{content_id} (image of {len(content)} bytes shown in the body, "
            where += f"at least {threshold}: a document)"
        elif filename is None and disposition != "attachment" and len(content) < _SMALL_IMAGE_BYTES:
            return
    if is_binhex(content):
        # Kept as sent (see README, Extraction): its name must not claim the type inside.
        media_type = BINHEX_TYPE
        filename = binhex_name(filename)
    _consider_file(run, content, filename, media_type, where[:255], depth)


def _uuencoded_files(run: Run, part: Message, depth: int, origin: str | None, label: str) -> None:
    """Files uuencoded into a plain-text body (Outlook Express, Eudora): documents."""
    text = payload_bytes(part, [])
    if not has_uuencode(text):
        return
    for name, content, problems in uudecode_blocks(text, len(text)):
        for problem in problems:
            run.note(f"{label}: uuencoded '{clean_filename(name, 80)}': {problem}")
        if not content:
            run.refuse(
                sanitize_filename(name, "attachment", run.limits.max_filename_bytes),
                "empty uuencoded file (0 bytes decoded): nothing to file",
            )
            continue
        media_type = sniff_media_type(content, None, name)
        _consider_file(run, content, name, media_type, origin or "uuencode", depth)


def _consider_file(
    run: Run, content: bytes, name: str | None, media_type: str, origin: str, depth: int
) -> None:
    """File one piece of content, opening it first when it is a container (TNEF, ZIP)."""
    base = last_path_component(name).strip().lower()
    if is_tnef(base, media_type):
        open_tnef(run, content, name, origin, depth, _consider_file)
        return
    if is_zip_archive(base, media_type):
        expand_zip(run, content, name, media_type, origin, depth, _consider_file)
        return
    add_document(run, content, name, media_type, origin)


def _handle_forwarded(run: Run, part: Message, depth: int, label: str) -> None:
    """Open a forwarded message; keep it whole as .eml when it holds no document."""
    inner = _inner_message(run, part, label)
    part_name = filename_of(part)
    max_bytes = run.limits.max_filename_bytes
    if inner is None:
        notes: list[str] = []
        content = payload_bytes(part, notes)
        if content:
            name = eml_name(None, part_name, max_bytes)
            run.add(name, content, "message/rfc822", "rfc822:(unreadable)")
        return
    subject = guard(lambda: subject_of(inner), None)
    origin = f"rfc822:{subject or '(no subject)'}"
    if depth >= run.limits.max_nesting_depth:
        run.note(
            f"{label}: forwarded message '{subject or ''}' is nested more than "
            f"{run.limits.max_nesting_depth} levels deep; filed as .eml without opening it"
        )
        _add_eml(run, inner, subject, part_name, origin, label)
        return
    before = run.found()
    _walk_message(run, inner, depth + 1, origin, f"forwarded message '{subject or ''}'")
    if run.found() == before:
        _add_eml(run, inner, subject, part_name, origin, label)


def _inner_message(run: Run, part: Message, label: str) -> Message | None:
    """The encapsulated message, re-parsed when a sender illegally base64-encoded it."""
    payload = subparts(part)
    inner = payload[0] if payload and isinstance(payload[0], Message) else None
    encoding = header_text(part, "content-transfer-encoding").strip().lower()
    if inner is not None and (encoding not in ("base64", "quoted-printable") or inner.keys()):
        return inner  # the normal case; a mislabelled but readable message is kept too
    if inner is not None:
        encoded = _serialize(inner) or b""
    else:
        raw_payload = guard(part.get_payload, None)
        encoded = (
            raw_payload.encode("utf-8", "surrogateescape") if isinstance(raw_payload, str) else b""
        )
    if encoding == "base64":
        decoded, _problem = b64decode_lenient(encoded)
    elif encoding == "quoted-printable":
        decoded = binascii.a2b_qp(encoded)
    else:
        decoded = encoded
    if not decoded.strip():
        return inner
    run.note(f"{label}: forwarded message was {encoding or 'oddly'} encoded; decoded it")
    try:
        return parse_message(decoded, PARSING_POLICY)
    except Exception as exc:
        run.note(f"{label}: forwarded message could not be parsed ({brief(exc)})")
        return inner


def _add_eml(
    run: Run, inner: Message, subject: str | None, part_name: str | None, origin: str, label: str
) -> None:
    """File a forwarded message whole, as ``<subject>.eml``."""
    content = _serialize(inner)
    if content is None:
        run.note(f"{label}: forwarded message could not be serialised; not filed")
        return
    name = eml_name(subject, part_name, run.limits.max_filename_bytes)
    run.add(name, content, "message/rfc822", origin)


def _serialize(msg: Message) -> bytes | None:
    """Bytes of a parsed (sub)message, headers kept as received rather than refolded."""
    attempts: tuple[Callable[[], Policy], ...] = (
        lambda: _as_received(msg.policy),
        lambda: email_policy.compat32.clone(linesep="\r\n"),
    )
    for make_policy in attempts:
        try:
            buffer = io.BytesIO()
            BytesGenerator(buffer, mangle_from_=False, policy=make_policy()).flatten(msg)
            return buffer.getvalue()
        except Exception:  # try the next, more lenient serialisation
            continue
    return None


def _as_received(policy: Policy) -> Policy:
    """The message's own policy with headers kept as received (only EmailPolicy can)."""
    if not isinstance(policy, email_policy.EmailPolicy):
        raise TypeError(f"{type(policy).__name__} cannot keep headers as received")
    return policy.clone(refold_source="none", linesep="\r\n")


def _note_defects(run: Run, label: str, defects: Iterable[object]) -> None:
    """Record the email package's defects as readable defects of this extraction."""
    for defect in defects:
        run.note(f"{label}: {describe_defect(defect)}")
