"""ZIP archives expanded within :class:`ExtractionLimits`, so that a zip bomb is refused.

Member count, declared total size and compression ratios are checked from the central
directory before anything is inflated; members are then inflated in chunks and one that
outgrows its declared size refuses the archive. Office/OpenDocument files are ZIPs too and
are never expanded.
"""

import bz2
import io
import lzma
import zipfile
import zlib
from typing import Final

from gateway.errors import GatewayError
from gateway.inbound.extraction.model import ExtractionLimits
from gateway.inbound.extraction.names import add_document, document_name
from gateway.inbound.extraction.run import ConsiderFile, Run, brief
from gateway.mail.names import clean_filename, sanitize_filename
from gateway.mail.sniff import (
    GENERIC_TYPES,
    ZIP_FAMILY,
    normalise_type,
    sniff_media_type,
    type_from_extension,
)

# Ratio limits apply only above this many uncompressed bytes: a tiny, very repetitive file
# is harmless and must not be refused.
_RATIO_FLOOR_BYTES: Final = 1024 * 1024
_CHUNK: Final = 64 * 1024  # bytes inflated at a time, so a bomb is caught early
# ZIP-based formats: a document, never an archive to expand.
_ZIP_DOCUMENT_EXTS: Final = frozenset(
    {
        "docx",
        "docm",
        "dotx",
        "dotm",
        "xlsx",
        "xlsm",
        "xltx",
        "xltm",
        "xlsb",
        "pptx",
        "pptm",
        "ppsx",
        "potx",
        "odt",
        "ods",
        "odp",
        "odg",
        "odf",
        "ott",
        "ots",
        "epub",
        "jar",
        "apk",
        "ipa",
        "xpi",
        "vsdx",
        "xps",
        "oxps",
        "3mf",
        "kmz",
        "numbers",
        "pages",
        "key",
        "sxw",
        "sxc",
        "sxi",
        "idml",
        "appx",
        "msix",
        "nupkg",
        "whl",
    }
)
_ZIP_TYPES_DECLARED: Final = frozenset({"application/zip"})
_ZIP_METHODS: Final = frozenset(
    {
        zipfile.ZIP_STORED,
        zipfile.ZIP_DEFLATED,
        zipfile.ZIP_BZIP2,
        zipfile.ZIP_LZMA,
    }
)
_ZIP_JUNK_NAMES: Final = frozenset({".ds_store", "thumbs.db", "ehthumbs.db", "desktop.ini"})


class _Refusal(GatewayError):
    """Raised inside archive handling when a limit is exceeded; the message is the reason."""


def is_zip_archive(base: str, media_type: str) -> bool:
    """Whether a file (its lower-cased base name, its sniffed type) is an archive to expand."""
    extension = base.rpartition(".")[2] if "." in base else ""
    return extension not in _ZIP_DOCUMENT_EXTS and (
        media_type in _ZIP_TYPES_DECLARED
        or (extension == "zip" and media_type == "application/octet-stream")
    )


def expand_zip(
    run: Run,
    content: bytes,
    name: str | None,
    media_type: str,
    origin: str,
    depth: int,
    consider: ConsiderFile,
) -> None:
    """Expand a ZIP into its members after checking every limit from the central directory.

    Each member goes to ``consider`` (the walk), which opens it in turn if need be.
    """
    limits = run.limits
    infos: list[zipfile.ZipInfo] | None = None
    problem = ""
    try:
        with zipfile.ZipFile(io.BytesIO(content)) as zf:
            infos = zf.infolist()
    except Exception as exc:
        problem = brief(exc)
    package_type = _zip_package_type(content, infos) if infos is not None else None
    if package_type is not None:
        name_type = type_from_extension(name)
        kept = name_type if name_type in ZIP_FAMILY else package_type
        add_document(run, content, name, kept, origin)
        return
    archive = document_name(run, name, "application/zip")
    if depth >= limits.max_nesting_depth:
        run.refuse(
            archive,
            "zip archive refused: archives nested more than "
            f"{limits.max_nesting_depth} levels deep",
        )
        return
    if infos is None:
        run.note(f"zip archive '{archive}' could not be opened ({problem}); filed as is")
        run.add(archive, content, media_type, origin)
        return
    members = [info for info in infos if not _is_zip_junk(info)]
    if not members:
        run.note(f"zip archive '{archive}' contains no file; filed as is")
        run.add(archive, content, media_type, origin)
        return
    refusal = _zip_limit_problem(members, len(content), limits)
    if refusal is not None:
        run.refuse(archive, f"zip archive refused: {refusal}")
        return
    if any(info.flag_bits & 0x1 for info in members):
        run.note(f"zip archive '{archive}' is password-protected; filed as is without opening")
        run.add(archive, content, media_type, origin)
        return
    unsupported = sorted({info.compress_type for info in members} - _ZIP_METHODS)
    if unsupported:
        run.note(
            f"zip archive '{archive}' uses an unsupported compression method "
            f"{unsupported}; filed as is"
        )
        run.add(archive, content, media_type, origin)
        return
    if run.full:
        run.dropped += len(members)
        return
    extracted: list[tuple[str, bytes]] = []
    total = 0
    for info in members:
        member = _zip_member_name(info)
        try:
            data = _read_member(content, info, limits.max_zip_total_bytes - total)
        except _Refusal as exc:
            run.refuse(archive, f"zip archive refused: '{clean_filename(member, 80)}' {exc}")
            return
        except Exception as exc:
            run.note(
                f"zip archive '{archive}' is damaged ({brief(exc)} in "
                f"'{clean_filename(member, 80)}'); filed as is"
            )
            run.add(archive, content, media_type, origin)
            return
        total += len(data)
        extracted.append((member, data))
    for member, data in extracted:
        if not data:
            run.refuse(
                sanitize_filename(member, "file", limits.max_filename_bytes),
                f"empty file (0 bytes) in zip archive '{archive}': nothing to file",
            )
            continue
        member_type = sniff_media_type(data, None, member)
        consider(run, data, member, member_type, f"zip:{archive}", depth + 1)


def _zip_limit_problem(
    members: list[zipfile.ZipInfo], archive_size: int, limits: ExtractionLimits
) -> str | None:
    """Check the declared sizes before inflating a single byte."""
    if len(members) > limits.max_zip_members:
        return (
            f"it contains {len(members)} files, more than the limit of "
            f"{limits.max_zip_members} files per archive"
        )
    total = sum(info.file_size for info in members)
    if total > limits.max_zip_total_bytes:
        return (
            f"it would expand to {_human_size(total)}, more than the limit of "
            f"{_human_size(limits.max_zip_total_bytes)} per archive"
        )
    for info in members:
        ratio = info.file_size / max(info.compress_size, 1)
        if info.file_size > _RATIO_FLOOR_BYTES and ratio > limits.max_zip_ratio:
            return (
                f"compression ratio {round(ratio)}:1 exceeds {limits.max_zip_ratio}:1 "
                f"(possible zip bomb) in '{clean_filename(_zip_member_name(info), 80)}'"
            )
    ratio = total / max(archive_size, 1)
    if total > _RATIO_FLOOR_BYTES and ratio > limits.max_zip_ratio:
        return (
            f"compression ratio {round(ratio)}:1 exceeds {limits.max_zip_ratio}:1 "
            "(possible zip bomb)"
        )
    return None


def _read_member(content: bytes, info: zipfile.ZipInfo, budget: int) -> bytes:
    """Decompress one member in chunks, stopping as soon as it outgrows its declared size.

    Done here rather than with ``ZipFile.open``: zipfile silently truncates a member at its
    declared size, so a forged size would pass for a mere CRC error instead of a bomb.
    """
    compressed = _raw_member(content, info)
    method = info.compress_type
    if method == zipfile.ZIP_STORED:
        data = compressed
    elif method == zipfile.ZIP_DEFLATED:
        data = _inflate(compressed, info.file_size, budget)
    elif method == zipfile.ZIP_BZIP2:
        data = _stream_decompress(bz2.BZ2Decompressor(), compressed, info.file_size, budget)
    else:
        decompressor, stream = _lzma_decompressor(compressed, info.file_size)
        data = _stream_decompress(decompressor, stream, info.file_size, budget)
    if len(data) != info.file_size:
        raise ValueError("size does not match the declared size")
    if zlib.crc32(data) != info.CRC:
        raise ValueError("CRC mismatch")
    return data


def _raw_member(content: bytes, info: zipfile.ZipInfo) -> bytes:
    """Compressed bytes of a member, located through its local header."""
    start = info.header_offset
    header = content[start : start + 30]
    if len(header) < 30 or not header.startswith(b"PK\x03\x04"):
        raise ValueError("bad local header")
    name_length = int.from_bytes(header[26:28], "little")
    extra_length = int.from_bytes(header[28:30], "little")
    begin = start + 30 + name_length + extra_length
    data = content[begin : begin + info.compress_size]
    if len(data) < info.compress_size:
        raise ValueError("truncated member")
    return data


def _inflate(compressed: bytes, declared: int, budget: int) -> bytes:
    decompressor = zlib.decompressobj(-zlib.MAX_WBITS)
    out = bytearray()
    position = 0
    for _ in range(len(compressed) // _CHUNK + declared // _CHUNK + 16):
        if decompressor.unconsumed_tail:
            feed = decompressor.unconsumed_tail
        else:
            feed = compressed[position : position + _CHUNK]
            position += len(feed)
        piece = decompressor.decompress(feed, _CHUNK)
        out += piece
        _check_growth(len(out), declared, budget)
        if decompressor.eof or (not piece and not feed):
            break
    if not decompressor.eof:
        raise ValueError("compressed data is truncated")
    return bytes(out)


def _stream_decompress(
    decompressor: bz2.BZ2Decompressor | lzma.LZMADecompressor,
    compressed: bytes,
    declared: int,
    budget: int,
) -> bytes:
    out = bytearray()
    position = 0
    for _ in range(len(compressed) // _CHUNK + declared // _CHUNK + 16):
        if decompressor.eof:
            break
        if decompressor.needs_input:
            if position >= len(compressed):
                break
            feed = compressed[position : position + _CHUNK]
            position += len(feed)
        else:
            feed = b""
        out += decompressor.decompress(feed, max_length=_CHUNK)
        _check_growth(len(out), declared, budget)
    return bytes(out)


def _lzma_decompressor(compressed: bytes, declared: int) -> tuple[lzma.LZMADecompressor, bytes]:
    """Raw LZMA1 decoder for a ZIP member (APPNOTE 5.8.8 header: version, props size, props).

    The dictionary size comes from the file and is capped to the declared output size: a
    forged 4 GB dictionary must not be allocated, and a smaller one decodes the same data.
    """
    if len(compressed) < 9:
        raise ValueError("truncated LZMA header")
    props_size = int.from_bytes(compressed[2:4], "little")
    props = compressed[4 : 4 + props_size]
    if props_size != 5 or len(props) != 5 or props[0] >= 9 * 5 * 5:
        raise ValueError("invalid LZMA properties")
    pb, rest = divmod(props[0], 45)
    lp, lc = divmod(rest, 9)
    dict_size = min(int.from_bytes(props[1:5], "little"), max(declared, 4096))
    filters = [
        {"id": lzma.FILTER_LZMA1, "dict_size": max(dict_size, 4096), "lc": lc, "lp": lp, "pb": pb}
    ]
    return lzma.LZMADecompressor(lzma.FORMAT_RAW, filters=filters), compressed[4 + props_size :]


def _check_growth(produced: int, declared: int, budget: int) -> None:
    if produced > declared:
        raise _Refusal(
            "expands beyond the size declared in the archive (forged headers, possible zip bomb)"
        )
    if produced > budget:
        raise _Refusal("makes the archive expand beyond its size limit")


def _zip_member_name(info: zipfile.ZipInfo) -> str:
    """Member name; UTF-8 names written without the UTF-8 flag (macOS) are repaired."""
    name = info.filename
    if not info.flag_bits & 0x800 and not name.isascii():
        try:
            return name.encode("cp437").decode("utf-8")
        except (UnicodeEncodeError, UnicodeDecodeError):
            return name
    return name


def _is_zip_junk(info: zipfile.ZipInfo) -> bool:
    """Directories and the litter of macOS/Windows archivers are not documents."""
    name = info.filename.replace("\\", "/")
    components = [c for c in name.split("/") if c]
    if not components or name.endswith("/"):  # (ZipInfo.is_dir() fails on an empty name)
        return True
    base = components[-1]
    return "__MACOSX" in components or base.lower() in _ZIP_JUNK_NAMES or base.startswith("._")


def _zip_package_type(content: bytes, infos: list[zipfile.ZipInfo]) -> str | None:
    """Media type when this ZIP is really an Office/OpenDocument/EPUB file, else None."""
    names = {info.filename for info in infos}
    if "[Content_Types].xml" in names:
        for prefix, media in (
            ("word/", "application/vnd.openxmlformats-officedocument.wordprocessingml.document"),
            ("xl/", "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"),
            ("ppt/", "application/vnd.openxmlformats-officedocument.presentationml.presentation"),
        ):
            if any(n.startswith(prefix) for n in names):
                return media
        return "application/octet-stream"
    first = infos[0] if infos else None
    if first is not None and first.filename == "mimetype" and first.file_size < 200:
        try:
            declared = _read_member(content, first, 200).decode("ascii").strip()
        except Exception:
            return "application/octet-stream"
        normalised = normalise_type(declared)
        if normalised and normalised not in GENERIC_TYPES:
            return normalised
        return "application/octet-stream"
    return None


def _human_size(size: int) -> str:
    """A size as a person reads it in a refusal reason (1.5 MB)."""
    if size < 1024:
        return f"{size} bytes"
    value = float(size)
    for unit in ("KB", "MB", "GB"):
        value /= 1024
        if value < 1024:
            return f"{value:.1f} {unit}"
    return f"{value / 1024:.1f} TB"
