"""The MIME building blocks of the messages the gateway writes itself: the document sent to
a partner (compose.py) and the forward of bot mail to a cabinet (forward.py).

They write final bytes: CRLF, 7-bit, header lines of at most 78 characters, non-ASCII as
RFC 2047 encoded words (whole characters, Q unless B is clearly shorter) or RFC 2231
parameters, deterministic for the same input -- the bytes DKIM signs are the bytes sent, and
no relay has a reason to re-encode them. compose.py's docstring says why this is done by
hand rather than by the stdlib `email` package.
"""

from __future__ import annotations

import binascii
import unicodedata
from collections.abc import Callable, Sequence

# Line and paragraph separators some mail software treats as line breaks.
BREAKS = frozenset("\r\n\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029")

MAX_LINE = 78  # RFC 5322 2.1.1: SHOULD be no more than 78 characters, excluding the CRLF
_BASE64_LINE = 76  # RFC 2045 6.8: encoded lines of at most 76 characters
_ALNUM = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
# RFC 2047 5(3): in a phrase (the display name) Q-encoded text may only hold letters, digits
# and "!*+-/" ("_" is the space); using that set everywhere keeps every word valid anywhere.
_Q_BYTE = tuple(
    chr(b) if chr(b) in _ALNUM + "!*+-/" else "_" if b == 0x20 else f"={b:02X}" for b in range(256)
)
# RFC 2231 7 / RFC 2045 5.1 attribute-char: printable ASCII except space, "*", "'", "%" and
# the tspecials; everything else is %XX.
_PCT_BYTE = tuple(chr(b) if chr(b) in _ALNUM + "!#$&+-.^_`|~" else f"%{b:02X}" for b in range(256))
_ATEXT = frozenset(_ALNUM + "!#$%&'*+-/=?^_`{|}~")  # RFC 5322 3.2.3: an atom needs no quotes
_PRINTABLE = frozenset(chr(c) for c in range(0x21, 0x7F))
_EW_MAX = 75  # RFC 2047 2: an encoded word is at most 75 characters long
_EW_OVERHEAD = len("=?utf-8?q??=")
_EW_MIN_ROOM = _EW_OVERHEAD + 12  # room for one encoded word holding a 4-byte character
_PLAIN_WORD_MAX = 60  # a longer word is encoded instead, so that it can be cut across lines

_TEXT_PART_HEAD = (
    b'Content-Type: text/plain; charset="utf-8"\r\n'
    b"Content-Transfer-Encoding: quoted-printable\r\n"
    b"\r\n"
)


def clean_text(value: str) -> str:
    """Text from outside (a company name, a subject) made safe to show in a header: line
    breaks, control and format characters and lone surrogates (no UTF-8 form) become
    spaces, runs of spaces collapse; NFC."""
    text = "".join(
        " " if c in BREAKS or unicodedata.category(c) in ("Cc", "Cf", "Cs") else c
        for c in unicodedata.normalize("NFC", value if isinstance(value, str) else "")
    )
    return " ".join(text.split())


# --- header encoding ----------------------------------------------------------------------------

# A header value is a list of tokens, written with one space between them; the folder may
# turn any of those spaces into CRLF + space.  (False, text) is written as it is; (True,
# text) is written as one or more RFC 2047 encoded words.
Token = tuple[bool, str]


def _encoded_words(text: str, first_room: int) -> list[str]:
    """`text` as RFC 2047 encoded words, the first at most `first_room` characters long, the
    others at most 75.  A word always holds whole characters (RFC 2047 5), and decoders drop
    the whitespace between adjacent encoded words, so any spaces travel encoded inside."""
    data = text.encode("utf-8")
    q_length = sum(len(_Q_BYTE[b]) for b in data)
    # As the email package: Q (readable, and needless base64 is scored by spam filters)
    # unless B is clearly shorter, as for non-Latin scripts and emoji.
    use_b = q_length - (len(data) + 2) // 3 * 4 >= 5
    words: list[str] = []
    room = first_room - _EW_OVERHEAD
    chunk: list[bytes] = []
    length = 0  # bytes in `chunk`
    size = 0  # their encoded length
    for char in text:
        encoded = char.encode("utf-8")
        if use_b:
            alone = (len(encoded) + 2) // 3 * 4
            grown = (length + len(encoded) + 2) // 3 * 4
        else:
            alone = sum(len(_Q_BYTE[b]) for b in encoded)
            grown = size + alone
        if grown > room and chunk:
            words.append(_encoded_word(b"".join(chunk), use_b))
            room = _EW_MAX - _EW_OVERHEAD
            chunk, length, grown = [], 0, alone
        chunk.append(encoded)
        length += len(encoded)
        size = grown
    if chunk:
        words.append(_encoded_word(b"".join(chunk), use_b))
    return words


def _encoded_word(data: bytes, use_b: bool) -> str:
    if use_b:
        return f"=?utf-8?b?{binascii.b2a_base64(data, newline=False).decode('ascii')}?="
    return f"=?utf-8?q?{''.join(_Q_BYTE[b] for b in data)}?="


def tokens(text: str, plain: Callable[[str], bool]) -> list[Token]:
    """Words of `text` that `plain` accepts stay as they are; runs of the others become one
    encoded token (its inner spaces encoded).  Text whose spacing the folder could not
    reproduce (leading, trailing or doubled spaces) is encoded whole."""
    if not text:
        return []
    words = text.split(" ")
    if "" in words:
        return [(True, text)]
    out: list[Token] = []
    for word in words:
        if plain(word):
            out.append((False, word))
        elif out and out[-1][0]:
            out[-1] = (True, f"{out[-1][1]} {word}")
        else:
            out.append((True, word))
    return out


def plain_text_word(word: str) -> bool:
    """A word of unstructured text (Subject) that can go as it is.  "=?" would be read as
    the start of an encoded word, so a word holding it is encoded itself."""
    return len(word) <= _PLAIN_WORD_MAX and _PRINTABLE.issuperset(word) and "=?" not in word


def atom(word: str) -> bool:
    """A word of a phrase (display name) that needs neither quotes nor encoding."""
    return len(word) <= _PLAIN_WORD_MAX and _ATEXT.issuperset(word) and "=?" not in word


def display_name_tokens(name: str) -> list[Token]:
    """The display name as a phrase: atoms, else one quoted-string for printable ASCII (as
    the email package wrote it; it may fold at its spaces, RFC 5322 3.2.4), else atoms mixed
    with encoded words.  "=?" is never put in quotes: some parsers (Python's among them)
    decode encoded words even inside a quoted-string."""
    words = name.split(" ")
    if all(map(atom, words)):
        return [(False, word) for word in words]
    if _PRINTABLE.issuperset(name.replace(" ", "")) and "=?" not in name:
        quoted = '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'
        pieces = quoted.split(" ")
        if max(map(len, pieces)) <= _PLAIN_WORD_MAX:
            return [(False, piece) for piece in pieces]
    return tokens(name, atom)


def fold(name: str, words: list[Token]) -> str:
    """`Name: tokens` + CRLF, folded at the spaces between tokens so that no line is longer
    than 78 characters; a plain token longer than a line (an address near the RFC 5321
    limits) stays whole on a line of its own, and is still far under 998 characters."""
    lines: list[str] = []
    line = f"{name}:"
    for encoded, text in words:
        if not encoded:
            if len(line) + 1 + len(text) > MAX_LINE and line:
                lines.append(line)
                line = ""
            line += " " + text
            continue
        room = MAX_LINE - len(line) - 1
        if room < _EW_MIN_ROOM:
            lines.append(line)
            line, room = "", MAX_LINE - 1
        first, *rest = _encoded_words(text, min(room, _EW_MAX))
        line += " " + first
        for word in rest:
            lines.append(line)
            line = " " + word
    lines.append(line)
    return "\r\n".join(lines) + "\r\n"


def parameter(name: str, value: str) -> list[str]:
    """A MIME parameter as unbreakable pieces: `name="value"` for plain ASCII that fits on a
    line, else RFC 2231 `name*=utf-8''%XX...`, in numbered sections when it does not fit
    (each piece, with the space and ";" around it, fits on a line of its own)."""
    if (
        _PRINTABLE.issuperset(value.replace(" ", ""))
        and '"' not in value
        and "\\" not in value
        and "=?" not in value  # see display_name_tokens
        and len(name) + len(value) + 5 <= MAX_LINE  # ' name="value";'
    ):
        return [f'{name}="{value}"']
    encoded = ["".join(_PCT_BYTE[b] for b in char.encode("utf-8")) for char in value]
    single = f"{name}*=utf-8''{''.join(encoded)}"
    if len(single) + 2 <= MAX_LINE:
        return [single]
    sections: list[str] = []
    head, chunk = f"{name}*0*=utf-8''", ""
    for piece in encoded:
        if chunk and len(head) + len(chunk) + len(piece) + 2 > MAX_LINE:
            sections.append(head + chunk)
            head, chunk = f"{name}*{len(sections)}*=", ""
        chunk += piece
    sections.append(head + chunk)
    return sections


def parameterized(name: str, value: str, parameters: list[str]) -> str:
    """A header such as `Content-Type: value; p1; p2`, folded after any ";"."""
    pieces = [value, *parameters]
    return fold(name, [(False, f"{piece};") for piece in pieces[:-1]] + [(False, pieces[-1])])


def base64_lines(content: bytes) -> bytes:
    """base64 in 76-character lines, each ending in CRLF (RFC 2045 6.8).

    One b2a_base64 call over the whole content, then slices: `base64.encodebytes` loops in
    Python over 57-byte chunks and then still needs its LF turned into CRLF."""
    encoded = binascii.b2a_base64(content, newline=False)
    if not encoded:
        return b""
    step = _BASE64_LINE
    return b"\r\n".join([encoded[i : i + step] for i in range(0, len(encoded), step)]) + b"\r\n"


def text_part(text: str) -> bytes:
    """A text/plain UTF-8 part, quoted-printable. `text` uses "\\n"; b2a_qp keeps the CRLFs
    as hard breaks, soft-breaks at 76 and encodes trailing whitespace, "=" and non-ASCII."""
    data = text.replace("\n", "\r\n").encode("utf-8")
    return _TEXT_PART_HEAD + binascii.b2a_qp(data, quotetabs=False, istext=True)


def boundary(seed: str, parts: tuple[bytes, ...]) -> str:
    """A boundary fixed from `seed`, so two calls give identical output.

    "=_" never occurs in base64 or quoted-printable text, so a collision could only come
    from a header of a part or from an attached message (arbitrary text); it is checked
    anywhere in a part (stricter than the line starts RFC 2046 forbids), and the boundary
    changes if it occurs.
    """
    for attempt in range(1000):
        candidate = f"=_gw.{seed}.{attempt}"
        delimiter = b"--" + candidate.encode("ascii")
        if not any(delimiter in part for part in parts):
            return candidate
    raise RuntimeError("no MIME boundary free of collisions")  # pragma: no cover


def multipart_mixed(head: str, parts: Sequence[bytes], seed: str) -> bytes:
    """A multipart/mixed message: `head` (its header lines, each ending in CRLF, without
    MIME-Version and Content-Type), then `parts` (each its headers, a blank line, a body),
    under a boundary fixed by `seed`."""
    chosen = boundary(seed, tuple(parts))
    delimiter = b"--" + chosen.encode("ascii")
    top = (
        head
        + "MIME-Version: 1.0\r\n"
        + parameterized("Content-Type", "multipart/mixed", [f'boundary="{chosen}"'])
        + "\r\n"
    ).encode("ascii")
    pieces = [top]
    for part in parts:
        pieces += [delimiter, b"\r\n", part, b"\r\n"]
    return b"".join([*pieces, delimiter, b"--\r\n"])
