"""Turn the raw bytes of one received email into the documents to file.

Why: clients of an accounting firm send invoices, receipts and statements from every mail
client there is.  The filing stage must receive *every* document the sender meant to send --
and nothing else (no message bodies, no signature logos) -- and a broken or hostile message
must never take the gateway down.  Everything here is a pure function of the input bytes:
no I/O, no global state; every problem becomes a defect string (for the log) or a
:class:`RefusedPart` whose reason the firm can read.

What is a document (product rule R4)
------------------------------------
The MIME tree is walked iteratively, at most 50 multipart levels deep.

1. ``multipart/*`` containers are opened, never filed.  A multipart whose ``boundary``
   parameter is missing is repaired when a ``--boundary`` line is found in its body.
2. Message body: a ``text/plain`` or ``text/html`` part *without a file name* and not marked
   ``Content-Disposition: attachment`` is the body, not a document.  So are ``text/*`` parts
   without a file name inside ``multipart/alternative``, and ``text/calendar``,
   ``text/enriched``, ``text/richtext``, ``text/watch-html``, ``text/x-amp-html``,
   ``text/rfc822-headers`` parts without a file name anywhere.
3. Images (declared ``image/*`` or sniffed as an image) are NOT documents when
   a. their Content-ID is referenced as ``cid:`` from any ``text/html`` part of the same
      message (signature logos, pictures embedded in the HTML), whatever their file name or
      disposition, and they are smaller than ``cid_image_document_bytes`` (a bigger one is
      a photo pasted into the body, e.g. a receipt: a document, origin ``cid:<id> (...)``); or
   b. they have no file name, are not ``Content-Disposition: attachment`` and their decoded
      size is below 10 KiB (10 240 bytes): a typical signature logo.
   Every other image is a document -- e.g. a 2 KB ``stamp.png`` sent as an attachment.
4. The signature part of ``multipart/signed`` (S/MIME ``pkcs7-signature``, PGP signature) and
   the ``application/pgp-encrypted`` version part of ``multipart/encrypted`` are not documents.
5. Any other part with content is a document whatever its Content-Disposition: Apple Mail
   sends PDFs ``inline``, some senders send no disposition, others ``octet-stream`` (the type
   is then sniffed from the bytes).  Origin is ``inline`` when the part says
   ``Content-Disposition: inline``, otherwise ``attachment``.  A part with a file name but no
   content is refused ("empty attachment").
6. Forwarded mail (``message/rfc822`` / ``message/global``) is opened and its documents are
   extracted (origin ``rfc822:<subject>``); if it yields nothing it is filed as one ``.eml``.
7. ``winmail.dat`` (TNEF) is opened with tnefparse; its attachments are documents (origin
   ``tnef``).  A TNEF that only carries the body (RTF) is skipped like a body.  A TNEF that
   cannot be decoded safely is filed as is, with a defect.
8. ZIP archives are expanded (origin ``zip:<archive>``) after checking the central directory
   against :class:`ExtractionLimits`; a failed check refuses the whole archive (a zip bomb is
   refused, never stored).  Encrypted, corrupt or unsupported archives are filed as is.
   Office/OpenDocument files are ZIPs too and are never expanded.
9. Containers (forwarded mail, TNEF, ZIP) open up to ``max_nesting_depth`` levels: a part
   of the received message is at depth 0 and each opened container adds one; a container
   found at depth ``max_nesting_depth`` is filed unopened (mail, TNEF) or refused (ZIP).
10. Files uuencoded into a ``text/plain`` body (``begin 644 name`` ... ``end``) are
    documents (origin ``uuencode``); BinHex 4.0 is kept as sent, typed
    ``application/mac-binhex40`` and named ``<name>.hqx``.
11. A message that yields no document and no refusal is filed whole as one ``.eml``
    (origin ``body``).  Beyond ``max_documents`` documents, one RefusedPart says how many
    were not filed.

ZIP limits: member count, declared total size and compression ratios are checked from the
central directory before anything is inflated; members are then inflated in 64 KiB chunks
and a member producing more than its declared size refuses the archive (forged headers).
Ratio limits only apply above 1 MiB of uncompressed data (per member, per archive): a
tiny, very repetitive file is harmless and must not be refused.

File names: see :func:`gateway.mail.names.sanitize_filename`.  A name whose last suffix is
not an extension (1-5 letters/digits with a letter) gets the extension of the sniffed type
(``SCAN0001`` -> ``SCAN0001.pdf``); a part without a usable name is called
``document-<n>.<ext>``.

Modules: ``walk`` (the MIME walk, forwarded mail, :func:`extract_documents`), ``parts``
(part bodies), ``headers`` (header decoding), ``decoding`` (lenient base64 and charsets),
``names`` (the names documents are filed under), ``tnef`` (winmail.dat), ``archives`` (ZIP
and its limits), ``run`` (the state of one call), ``model`` (limits and results). File-name
sanitising and media sniffing are shared with other stages: :mod:`gateway.mail`.
"""

from gateway.inbound.extraction.model import (
    ExtractedDocument,
    Extraction,
    ExtractionLimits,
    RefusedPart,
)
from gateway.inbound.extraction.walk import extract_documents

__all__ = [
    "ExtractedDocument",
    "Extraction",
    "ExtractionLimits",
    "RefusedPart",
    "extract_documents",
]
