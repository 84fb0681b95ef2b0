"""Compose benchmark: `compose` (MIME bytes written directly) against the stdlib `email` way.

Builds N outbound messages, each carrying a distinct ~30 KB PDF-like file (a mix of ASCII
and accented file names, a display name on the From), both ways in the same run: `compose`
as the gateway uses it, and the EmailMessage + `as_bytes(policy=SMTP)` implementation it
replaced, reimplemented here with the same validation helpers. Before the clock starts the
two outputs are parsed back and must read the same (subject, sender, file name and bytes,
text). The arms alternate over several rounds; prints messages/s and ms/message (median of
the rounds) and the ratio compose/email (target: >= 5).

    .venv/bin/python benchmarks/compose.py [--messages 2000] [--rounds 3] [--size 30000]
"""

from __future__ import annotations

import argparse
import email.parser
import email.policy
import hashlib
import random
import statistics
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime

from gateway.mail.names import sanitize_filename
from gateway.outbound.compose import (
    OutboundDocument,
    _body,
    _header_text,
    _media_type,
    compose,
    header_display_name,
    message_id_for,
    plain_address,
)

SENDER = "myunisoft+aecconseil@welyb.fr"
RECIPIENT = "depot-aec@partner.example"
DOMAIN = "welyb.fr"
WHEN = datetime(2026, 3, 2, 9, 15, 3, tzinfo=UTC)
SENDER_NAME = "Cabinet Dupont & Associés"
TARGET = 5.0

Composer = Callable[[OutboundDocument, str, str, str, datetime, str | None], bytes]


def email_package_compose(
    document: OutboundDocument,
    sender: str,
    recipient: str,
    message_id_domain: str,
    date: datetime,
    sender_name: str | None = None,
) -> bytes:
    """The baseline: the EmailMessage implementation `compose` replaced, same helpers."""
    smtp = email.policy.SMTP
    from_address = plain_address(sender, "sender")
    to_address = plain_address(recipient, "recipient")
    message_id = message_id_for(document.delivery_id, document.sha256, message_id_domain)
    filename = sanitize_filename(document.filename, f"document-{document.document_id}")
    company = _header_text(document.company_name, _header_text(document.company_slug, "société"))
    message = EmailMessage(policy=smtp)
    local, _, domain = from_address.rpartition("@")
    display = header_display_name(sender_name) if sender_name is not None else ""
    message["From"] = Address(display_name=display, username=local, domain=domain)
    message["To"] = to_address
    message["Subject"] = f"{company} — {filename}"
    message["Date"] = format_datetime(date)
    message["Message-ID"] = message_id
    message["MIME-Version"] = "1.0"
    message.set_content(_body(document, filename, company), charset="utf-8", cte="quoted-printable")
    maintype, subtype = _media_type(document.media_type)
    message.add_attachment(
        bytes(document.content),
        maintype=maintype,
        subtype=subtype,
        cte="base64",
        disposition="attachment",
        filename=filename,
        params={"name": filename},
    )
    for part in message.iter_parts():
        del part["MIME-Version"]
    # the old code also re-serialised until the boundary count was right: once, in practice
    message.set_boundary(f"=_gw.{message_id[1:].partition('@')[0]}.0")
    return message.as_bytes(policy=smtp)


def documents(count: int, size: int) -> list[OutboundDocument]:
    """`count` distinct documents of about `size` bytes, as the dispatcher hands them over."""
    rng = random.Random(117)
    names = ["facture-{i}.pdf", "Facture février 2026 n°{i}.pdf", "Relevé bancaire {i}.pdf"]
    result = []
    for i in range(count):
        content = b"%PDF-1.4\n" + rng.randbytes(size - 16) + b"\n%%EOF\n"
        result.append(
            OutboundDocument(
                delivery_id=1000 + i,
                document_id=5000 + i,
                filename=names[i % len(names)].format(i=i),
                media_type="application/pdf",
                content=content,
                sha256=hashlib.sha256(content).hexdigest(),
                company_name="Dupont Maçonnerie",
                company_slug="dupont-maconnerie",
                partner_display_name="MyUnisoft",
            )
        )
    return result


def seen_by_a_reader(data: bytes) -> tuple[object, ...]:
    message = email.parser.BytesParser(policy=email.policy.default).parsebytes(data)
    assert isinstance(message, EmailMessage)
    (part,) = message.iter_attachments()
    body = message.get_body(preferencelist=("plain",))
    assert body is not None
    return (
        str(message["Subject"]),
        str(message["From"]),
        message["Message-ID"],
        part.get_filename(),
        part.get_payload(decode=True),
        body.get_content(),
    )


def run(composer: Composer, docs: Sequence[OutboundDocument]) -> float:
    """Messages per second composing every document once."""
    start = time.perf_counter()
    for document in docs:
        composer(document, SENDER, RECIPIENT, DOMAIN, WHEN, SENDER_NAME)
    return len(docs) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=2000, help="per arm and round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--size", type=int, default=30_000, help="attachment bytes")
    args = parser.parse_args()

    docs = documents(args.messages, args.size)
    arms: dict[str, Composer] = {"compose": compose, "email": email_package_compose}
    for document in docs[:3]:  # one of each file name style
        ours, theirs = (
            arm(document, SENDER, RECIPIENT, DOMAIN, WHEN, SENDER_NAME) for arm in arms.values()
        )
        assert seen_by_a_reader(ours) == seen_by_a_reader(theirs), "the two arms disagree"
    sample = compose(docs[0], SENDER, RECIPIENT, DOMAIN, WHEN, SENDER_NAME)
    print(
        f"{args.messages} messages x {args.rounds} rounds, attachment {args.size:,} bytes,"
        f" message {len(sample):,} bytes"
    )
    for composer in arms.values():  # warm-up
        run(composer, docs[:50])
    results: dict[str, list[float]] = {name: [] for name in arms}
    for _ in range(args.rounds):
        for name, composer in arms.items():
            results[name].append(run(composer, docs))
    rates = {name: statistics.median(values) for name, values in results.items()}
    for name, value in rates.items():
        print(f"{name:8} {value:9.1f} msg/s   {1000 / value:6.3f} ms/message")
    ratio = rates["compose"] / rates["email"]
    verdict = "ok" if ratio >= TARGET else "BELOW TARGET"
    print(f"ratio compose/email {ratio:5.1f}x   (target >= {TARGET:.0f}x: {verdict})")


if __name__ == "__main__":
    main()
