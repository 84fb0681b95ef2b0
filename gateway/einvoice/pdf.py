"""The invoice XML a Factur-X / ZUGFeRD / XRechnung PDF carries, taken out under a size bound.

A PDF is a container anyone can fill: its embedded file may claim any size and be a flate
bomb (200 MB of zeros fit in 200 KB). So the embedded stream's encoded bytes are read as they
are in the file, and inflated here with a bound on the output: pypdf would inflate it whole.

Most PDFs that come by mail are not e-invoices; a byte search decides that before pypdf opens
anything.
"""

from __future__ import annotations

import itertools
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from io import BytesIO
from typing import Any, Final

from pypdf import PasswordType, PdfReader
from pypdf.generic import ArrayObject, DictionaryObject, NumberObject, StreamObject

from gateway.einvoice.model import Refused

# The names the specifications give the invoice XML: Factur-X and ZUGFeRD 2.1+, ZUGFeRD 2.0
# (ZUGFeRD-invoice.xml in 1.0, matched regardless of case), XRechnung.
INVOICE_FILE_NAMES: Final = frozenset({"factur-x.xml", "zugferd-invoice.xml", "xrechnung.xml"})

_MAX_NAME_TREE_DEPTH: Final = 8
_MAX_NAME_TREE_NODES: Final = 1000
_MAX_FILE_SPECS: Final = 1000
_END: Final = object()


@dataclass(frozen=True)
class EmbeddedXml:
    name: str  # as the PDF names it, e.g. "factur-x.xml"
    data: bytes


@dataclass(frozen=True)
class _EmbeddedStream:
    """What the decoding needs of an embedded file stream, read out of pypdf's objects."""

    name: str
    encoded: bytes
    filters: tuple[str, ...]
    has_decode_parms: bool
    declared_size: int | None


def embedded_invoice_xml(content: bytes, *, max_xml_bytes: int) -> EmbeddedXml | None:
    """The invoice XML embedded in the PDF ``content``; None when it has none or cannot be
    opened (it is then an ordinary document). :class:`Refused` when the embedded file is one
    the gateway will not inflate or whose size is a lie. (Whether a PDF may embed one at
    all is decided before, from its bytes: gateway/einvoice/reader.py.)"""
    try:
        stream = _find_invoice_stream(content)
    except Exception:  # pypdf raises about anything on a broken PDF
        # A PDF pypdf cannot read is no e-invoice the gateway can read; it is filed as the
        # document it is.
        return None
    if stream is None:
        return None
    return EmbeddedXml(stream.name, _decoded(stream, max_xml_bytes))


def _find_invoice_stream(content: bytes) -> _EmbeddedStream | None:
    reader = PdfReader(BytesIO(content), strict=False)
    if reader.is_encrypted and reader.decrypt("") == PasswordType.NOT_DECRYPTED:
        return None  # PDF/A (so Factur-X) forbids encryption anyway
    catalog = _resolved(reader.trailer.get("/Root"))
    if not isinstance(catalog, DictionaryObject):
        return None
    for name, file_spec in _file_specs(catalog):
        if name.rsplit("/", 1)[-1].lower() in INVOICE_FILE_NAMES:
            stream = _embedded_stream(file_spec)
            if stream is not None:
                return _stream_facts(name, stream)
    return None


def _file_specs(catalog: DictionaryObject) -> Iterator[tuple[str, DictionaryObject]]:
    """The catalog's associated files (/AF, PDF/A-3's way) first, then the embedded files'
    name tree, each with its file name; bounded, since a hostile tree may be endless."""
    associated = _resolved(catalog.get("/AF"))
    entries: Iterator[tuple[str | None, Any]] = iter(())
    if isinstance(associated, ArrayObject):
        entries = ((None, item) for item in associated)
    names = _resolved(catalog.get("/Names"))
    tree = _resolved(names.get("/EmbeddedFiles")) if isinstance(names, DictionaryObject) else None
    if isinstance(tree, DictionaryObject):
        entries = itertools.chain(entries, _name_tree(tree))
    for key, value in itertools.islice(entries, _MAX_FILE_SPECS):
        file_spec = _resolved(value)
        if not isinstance(file_spec, DictionaryObject):
            continue
        name = _text(file_spec.get("/UF")) or _text(file_spec.get("/F")) or key
        if name:
            yield name, file_spec


def _name_tree(root: DictionaryObject) -> Iterator[tuple[str | None, Any]]:
    """The (name, file spec) pairs of a name tree, in order; a hostile tree may loop or fan
    out without end, so its depth and the nodes visited are bounded."""
    pending: list[Iterator[Any]] = [iter((root,))]
    visited = 0
    while pending:
        kid = next(pending[-1], _END)
        if kid is _END:
            pending.pop()
            continue
        visited += 1
        node = _resolved(kid)
        if visited > _MAX_NAME_TREE_NODES:
            return
        if not isinstance(node, DictionaryObject):
            continue
        pairs = _resolved(node.get("/Names"))
        if isinstance(pairs, ArrayObject):
            for index in range(0, len(pairs) - 1, 2):
                yield _text(pairs[index]), pairs[index + 1]
        kids = _resolved(node.get("/Kids"))
        if isinstance(kids, ArrayObject) and len(pending) <= _MAX_NAME_TREE_DEPTH:
            pending.append(iter(kids))


def _embedded_stream(file_spec: DictionaryObject) -> StreamObject | None:
    files = _resolved(file_spec.get("/EF"))
    if not isinstance(files, DictionaryObject):
        return None
    for key in ("/UF", "/F"):
        stream = _resolved(files.get(key))
        if isinstance(stream, StreamObject):
            return stream
    return None


def _stream_facts(name: str, stream: StreamObject) -> _EmbeddedStream:
    filters = _resolved(stream.get("/Filter"))
    if isinstance(filters, ArrayObject):
        filter_names = tuple(str(_resolved(item)) for item in filters)
    else:
        filter_names = () if filters is None else (str(filters),)
    decode_parms = _resolved(stream.get("/DecodeParms"))
    params = _resolved(stream.get("/Params"))
    size = _resolved(params.get("/Size")) if isinstance(params, DictionaryObject) else None
    return _EmbeddedStream(
        name=name,
        # The bytes as they are in the file: no public pypdf call gives them undecoded, and
        # get_data() would inflate them without a bound.
        encoded=stream._data,
        filters=filter_names,
        has_decode_parms=_has_entries(decode_parms),
        declared_size=int(size) if isinstance(size, NumberObject) else None,
    )


def _decoded(stream: _EmbeddedStream, max_xml_bytes: int) -> bytes:
    what = f"the PDF's embedded {stream.name}"
    declared = stream.declared_size
    if declared is not None and declared > max_xml_bytes:
        raise Refused(
            f"{what} declares {declared} bytes, over the size limit of {max_xml_bytes} bytes"
        )
    if stream.filters == ():
        data = stream.encoded
    elif stream.filters == ("/FlateDecode",) and not stream.has_decode_parms:
        try:
            # One byte more than allowed tells "too big" from "exactly the limit".
            data = zlib.decompressobj().decompress(stream.encoded, max_xml_bytes + 1)
        except zlib.error as error:
            raise Refused(f"{what} cannot be inflated ({error})") from None
    else:
        encoding = " ".join(stream.filters) + (
            " with parameters" if stream.has_decode_parms else ""
        )
        raise Refused(f"{what} is encoded with {encoding}: only plain FlateDecode is read")
    if len(data) > max_xml_bytes:
        raise Refused(f"{what} is over the size limit of {max_xml_bytes} bytes")
    if declared is not None and declared != len(data):
        raise Refused(
            f"the embedded XML's declared size ({declared} bytes) is not its real size "
            f"({len(data)} bytes)"
        )
    return data


def _resolved(value: Any) -> Any:
    """A PDF object with its indirect reference followed (pypdf's get_object)."""
    return None if value is None else value.get_object()


def _has_entries(decode_parms: Any) -> bool:
    """Whether /DecodeParms asks for anything (a predictor, say): /Null or {} asks nothing."""
    if isinstance(decode_parms, ArrayObject):
        return any(_has_entries(_resolved(item)) for item in decode_parms)
    return isinstance(decode_parms, DictionaryObject) and len(decode_parms) > 0


def _text(value: Any) -> str | None:
    resolved = _resolved(value)
    return resolved if isinstance(resolved, str) else None
