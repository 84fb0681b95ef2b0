"""Bounce addresses (gateway.outbound.verp) and bounce reading (gateway.mail.dsn).

R17: a partner's refusal that comes back later as a bounce marks the delivery bounced with
the partner's words.  The VERP address says which delivery; the DSN says what happened.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import random
import time
from datetime import UTC, datetime

import pytest

from gateway.mail.dsn import BounceReport, parse_bounce
from gateway.outbound.compose import OutboundDocument, compose
from gateway.outbound.verp import BounceAddresses

SECRET = b"0123456789abcdef0123456789abcdef"


def crlf(text: str) -> bytes:
    return text.replace("\n", "\r\n").encode("utf-8")


# --------------------------------------------------------------------------- VERP


def test_verp_round_trip() -> None:
    addresses = BounceAddresses(SECRET, "welyb.fr")
    for delivery_id in (0, 1, 42, 9_223_372_036_854_775_807):
        address = addresses.for_delivery(delivery_id)
        local, _, domain = address.partition("@")
        assert domain == "welyb.fr"
        prefix, _, rest = local.partition("+")
        number, _, tag = rest.partition("-")
        assert (prefix, number) == ("bounce", str(delivery_id))
        assert len(tag) == 10 and tag == tag.lower() and "=" not in tag
        assert addresses.delivery_of(address) == delivery_id
        assert addresses.delivery_of(f"<{address}>") == delivery_id


def test_verp_tag_is_hmac_base32() -> None:
    digest = hmac.new(SECRET, b"42", hashlib.sha256).digest()
    tag = base64.b32encode(digest).decode().lower()[:10]
    assert BounceAddresses(SECRET, "welyb.fr").for_delivery(42) == f"bounce+42-{tag}@welyb.fr"


def test_verp_case_insensitive() -> None:
    addresses = BounceAddresses(SECRET, "Welyb.FR", local_prefix="Bounce")
    address = addresses.for_delivery(42)
    assert address.startswith("bounce+42-") and address.endswith("@welyb.fr")
    assert addresses.delivery_of(address.upper()) == 42
    assert addresses.delivery_of(address.replace("bounce", "BoUnCe")) == 42
    assert addresses.delivery_of(address + ".") == 42  # trailing root dot in the domain


def test_verp_refuses_forgeries() -> None:
    addresses = BounceAddresses(SECRET, "welyb.fr")
    good = addresses.for_delivery(42)
    tag = good.split("-", 1)[1].split("@")[0]
    wrong_tag = ("a" if tag[0] != "a" else "b") + tag[1:]
    cases = [
        good.replace(tag, wrong_tag),  # wrong tag
        good.replace("@welyb.fr", "@other.example"),  # other domain
        good.replace("@welyb.fr", "@sub.welyb.fr"),
        good.replace("+42-", "+43-"),  # tampered id
        good.replace("+42-", "+042-"),  # same id, another spelling
        good.replace("bounce+", "other+"),  # other prefix
        f"bounce+42-{tag[:9]}@welyb.fr",  # short tag
        f"bounce+42-{tag}x@welyb.fr",
        f"bounce+-{tag}@welyb.fr",
        "bounce+42@welyb.fr",
        "bounce@welyb.fr",
        good + "\r\n",
        good.replace("@", " @"),
        "",
        "not an address",
        "bounce+99999999999999999999999-aaaaaaaaaa@welyb.fr",
    ]
    for address in cases:
        assert addresses.delivery_of(address) is None, address
    assert addresses.delivery_of(None) is None  # type: ignore[arg-type]
    other_secret = BounceAddresses(b"another secret entirely", "welyb.fr")
    assert other_secret.delivery_of(good) is None


def test_verp_construction_checks() -> None:
    with pytest.raises(ValueError):
        BounceAddresses(b"", "welyb.fr")
    with pytest.raises(ValueError):
        BounceAddresses(SECRET, "not a domain")
    with pytest.raises(ValueError):
        BounceAddresses(SECRET, "welyb.fr", local_prefix="bad+prefix")
    with pytest.raises(ValueError):
        BounceAddresses(SECRET, "welyb.fr").for_delivery(-1)


# --------------------------------------------------------------------------- DSN samples


def original_message() -> bytes:
    """What we sent: the returned copy at the end of a bounce."""
    pdf = b"%PDF-1.4\n1 0 obj\n<<>>\nendobj\n%%EOF\n"
    doc = OutboundDocument(
        delivery_id=42,
        document_id=117,
        filename="facture 5.1.1.pdf",  # a status-looking name must not fool the reader
        media_type="application/pdf",
        content=pdf,
        sha256=hashlib.sha256(pdf).hexdigest(),
        company_name="Dupont Maçonnerie",
        company_slug="dupont-maconnerie",
        partner_display_name="MyUnisoft",
    )
    return compose(
        doc,
        "myunisoft+aecconseil@welyb.fr",
        "compta@partner.example",
        "welyb.fr",
        datetime(2026, 3, 2, 9, 15, 2, tzinfo=UTC),
    )


def original_headers() -> str:
    return original_message().split(b"\r\n\r\n", 1)[0].decode("ascii").replace("\r\n", "\n")


POSTFIX_NOTICE = """\
This is the mail system at host mail.welyb.fr.

I'm sorry to have to inform you that your message could not
be delivered to one or more recipients. It's attached below.

For further assistance, please send mail to postmaster.

If you do so, please include this problem report. You can
delete your own text from the attached returned message.

                   The mail system

<compta@partner.example>: host mx.partner.example[203.0.113.7] said: 550 5.1.1
    <compta@partner.example>: Recipient address rejected: User unknown in
    virtual mailbox table (in reply to RCPT TO command)
"""


def postfix_dsn() -> bytes:
    boundary = "4B2F31A0123.1772442903/mail.welyb.fr"
    return crlf(
        f"""\
Return-Path: <>
Received: by mail.welyb.fr (Postfix)
\tid 4B2F31A0123; Mon,  2 Mar 2026 10:15:03 +0100 (CET)
Date: Mon,  2 Mar 2026 10:15:03 +0100 (CET)
From: MAILER-DAEMON@mail.welyb.fr (Mail Delivery System)
Subject: Undelivered Mail Returned to Sender
To: bounce+42-abcdefghij@welyb.fr
Auto-Submitted: auto-replied
MIME-Version: 1.0
Content-Type: multipart/report; report-type=delivery-status;
\tboundary="{boundary}"
Content-Transfer-Encoding: 8bit
Message-Id: <20260302091503.4B2F31A0123@mail.welyb.fr>

This is a MIME-encapsulated message.

--{boundary}
Content-Description: Notification
Content-Type: text/plain; charset=utf-8
Content-Transfer-Encoding: 8bit

{POSTFIX_NOTICE}
--{boundary}
Content-Description: Delivery report
Content-Type: message/delivery-status

Reporting-MTA: dns; mail.welyb.fr
X-Postfix-Queue-ID: 4B2F31A0123
X-Postfix-Sender: rfc822; bounce+42-abcdefghij@welyb.fr
Arrival-Date: Mon,  2 Mar 2026 10:15:02 +0100 (CET)

Final-Recipient: rfc822; compta@partner.example
Original-Recipient: rfc822;compta@partner.example
Action: failed
Status: 5.1.1
Remote-MTA: dns; mx.partner.example
Diagnostic-Code: smtp; 550 5.1.1 <compta@partner.example>: Recipient address
    rejected: User unknown in virtual mailbox table

--{boundary}
Content-Description: Undelivered Message Headers
Content-Type: text/rfc822-headers
Content-Transfer-Encoding: 8bit

{original_headers()}

--{boundary}--
"""
    )


def postfix_delayed() -> bytes:
    boundary = "7C1E41A0456.1772457303/mail.welyb.fr"
    return crlf(
        f"""\
Return-Path: <>
Date: Mon,  2 Mar 2026 14:15:03 +0100 (CET)
From: MAILER-DAEMON@mail.welyb.fr (Mail Delivery System)
Subject: Delayed Mail (still being retried)
To: bounce+42-abcdefghij@welyb.fr
Auto-Submitted: auto-replied
MIME-Version: 1.0
Content-Type: multipart/report; report-type=delivery-status;
\tboundary="{boundary}"
Content-Transfer-Encoding: 8bit

This is a MIME-encapsulated message.

--{boundary}
Content-Description: Notification
Content-Type: text/plain; charset=utf-8
Content-Transfer-Encoding: 8bit

This is the mail system at host mail.welyb.fr.

####################################################################
# THIS IS A WARNING ONLY.  YOU DO NOT NEED TO RESEND YOUR MESSAGE. #
####################################################################

Your message could not be delivered for more than 4 hour(s).
It will be retried until it is 5 day(s) old.

<compta@partner.example>: connect to mx.partner.example[203.0.113.7]:25:
    Connection timed out

--{boundary}
Content-Description: Delivery report
Content-Type: message/delivery-status

Reporting-MTA: dns; mail.welyb.fr
X-Postfix-Queue-ID: 7C1E41A0456
Arrival-Date: Mon,  2 Mar 2026 10:15:02 +0100 (CET)

Final-Recipient: rfc822; compta@partner.example
Original-Recipient: rfc822;compta@partner.example
Action: delayed
Status: 4.4.1
Diagnostic-Code: X-Postfix; connect to mx.partner.example[203.0.113.7]:25:
    Connection timed out
Will-Retry-Until: Sat,  7 Mar 2026 10:15:02 +0100 (CET)

--{boundary}
Content-Description: Undelivered Message Headers
Content-Type: text/rfc822-headers

{original_headers()}

--{boundary}--
"""
    )


def exchange_ndr(delivery_status_encoding: str = "7bit") -> bytes:
    """Exchange Online: text + HTML explanation, the report, and the whole original."""
    status = """\
Reporting-MTA: dns;AM0PR01MB1234.eurprd01.prod.exchangelabs.com
Received-From-MTA: dns;mail.welyb.fr
Arrival-Date: Mon, 2 Mar 2026 09:15:04 +0000

Original-Recipient: rfc822;compta@partner.example
Final-Recipient: rfc822;compta@partner.example
Action: failed
Status: 5.1.10
Diagnostic-Code: smtp;550 5.1.10 RESOLVER.ADR.RecipientNotFound; Recipient
 compta@partner.example not found by SMTP address lookup
"""
    if delivery_status_encoding == "base64":
        body = base64.encodebytes(status.encode("ascii")).decode("ascii")
    else:
        body = status
    outer, inner = "_000_AM0PR01MB1234_", "_001_AM0PR01MB1234_"
    original = original_message().decode("ascii").replace("\r\n", "\n")
    return crlf(
        f"""\
From: postmaster@partner.onmicrosoft.com
To: bounce+42-abcdefghij@welyb.fr
Date: Mon, 2 Mar 2026 09:15:05 +0000
Subject: =?utf-8?q?Undeliverable=3A_Dupont_Ma=C3=A7onnerie_=E2=80=94_facture?=
Message-ID: <f1a2b3c4-0000-4000-8000-0123456789ab@AM0PR01MB1234.eurprd01.prod.exchangelabs.com>
Auto-Submitted: auto-replied
MIME-Version: 1.0
Content-Type: multipart/report; report-type=delivery-status; boundary="{outer}"
X-MS-Exchange-Message-Is-Ndr:
Content-Language: en-US

--{outer}
Content-Type: multipart/alternative; boundary="{inner}"

--{inner}
Content-Type: text/plain; charset="us-ascii"
Content-Transfer-Encoding: quoted-printable

Your message to compta@partner.example couldn't be delivered.
compta wasn't found at partner.example.

Remote Server returned '550 5.1.10 RESOLVER.ADR.RecipientNotFound; Recipient n=
ot found by SMTP address lookup'

--{inner}
Content-Type: text/html; charset="us-ascii"
Content-Transfer-Encoding: quoted-printable

<html><body><p>Your message to compta@partner.example couldn't be delivered.</p>=
</body></html>

--{inner}--

--{outer}
Content-Type: message/delivery-status
Content-Transfer-Encoding: {delivery_status_encoding}

{body}
--{outer}
Content-Type: message/rfc822

{original}
--{outer}--
"""
    )


PLAIN_POSTFIX = crlf(
    f"""\
Return-Path: <>
Date: Mon,  2 Mar 2026 10:15:03 +0100 (CET)
From: MAILER-DAEMON@mx.partner.example (Mail Delivery System)
Subject: Undelivered Mail Returned to Sender
To: bounce+42-abcdefghij@welyb.fr
MIME-Version: 1.0
Content-Type: text/plain; charset=us-ascii

{POSTFIX_NOTICE}
--- Returned message headers follow ---
Subject: Dupont =?utf-8?q?Ma=C3=A7onnerie?=
"""
)

QMAIL = crlf(
    """\
From: MAILER-DAEMON@mx.partner.example
To: bounce+42-abcdefghij@welyb.fr
Subject: failure notice
Date: 2 Mar 2026 09:15:05 -0000

Hi. This is the qmail-send program at mx.partner.example.
I'm afraid I wasn't able to deliver your message to the following addresses.
This is a permanent error; I've given up. Sorry it didn't work out.

<compta@partner.example>:
203.0.113.7 does not like recipient.
Remote host said: 550 5.1.1 <compta@partner.example>... User unknown
Giving up on 203.0.113.7.

--- Below this line is a copy of the message.

Subject: Dupont Maconnerie - facture 5.1.1.pdf
"""
)

AUTO_REPLY = crlf(
    """\
From: Marie Martin <compta@partner.example>
To: bounce+42-abcdefghij@welyb.fr
Subject: =?utf-8?q?R=C3=A9ponse_automatique=C2=A0=3A_Dupont_Ma=C3=A7onnerie?=
Date: Mon, 2 Mar 2026 09:16:00 +0000
Auto-Submitted: auto-replied
X-Autoreply: yes
MIME-Version: 1.0
Content-Type: text/plain; charset=utf-8
Content-Transfer-Encoding: 8bit

Bonjour,

Je suis absente du 2.3.2026 au 5.1.2027 et n'ai pas accès à ma messagerie.
En cas d'urgence : 01 55 55 12 34, poste 550.

Marie Martin
"""
)


# --------------------------------------------------------------------------- DSN tests


def test_postfix_dsn() -> None:
    report = parse_bounce(postfix_dsn())
    assert report == BounceReport(
        permanent=True,
        status="5.1.1",
        diagnostic="550 5.1.1 <compta@partner.example>: Recipient address rejected: "
        "User unknown in virtual mailbox table",
        recipient="compta@partner.example",
        action="failed",
    )


def test_exchange_ndr() -> None:
    report = parse_bounce(exchange_ndr())
    assert report is not None
    assert report.permanent is True
    assert report.status == "5.1.10"
    assert report.action == "failed"
    assert report.recipient == "compta@partner.example"
    assert report.diagnostic == (
        "550 5.1.10 RESOLVER.ADR.RecipientNotFound; Recipient compta@partner.example "
        "not found by SMTP address lookup"
    )


def test_base64_delivery_status_part() -> None:
    assert parse_bounce(exchange_ndr("base64")) == parse_bounce(exchange_ndr())


def test_delayed_is_not_permanent() -> None:
    report = parse_bounce(postfix_delayed())
    assert report is not None
    assert report.permanent is False
    assert report.status == "4.4.1"
    assert report.action == "delayed"
    assert report.diagnostic == (
        "connect to mx.partner.example[203.0.113.7]:25: Connection timed out"
    )


def test_failed_with_transient_status_is_permanent() -> None:
    # Exchange gives up on an expired message with "Action: failed" and a 4.4.7 status:
    # it will never be delivered.
    data = exchange_ndr().replace(b"Status: 5.1.10", b"Status: 4.4.7")
    report = parse_bounce(data)
    assert report is not None and report.permanent is True and report.status == "4.4.7"


def test_worst_recipient_block_reported() -> None:
    data = postfix_dsn().replace(
        b"Final-Recipient: rfc822; compta@partner.example\r\n",
        b"Final-Recipient: rfc822; archive@partner.example\r\nAction: delivered\r\n"
        b"Status: 2.0.0\r\n\r\nFinal-Recipient: rfc822; compta@partner.example\r\n",
    )
    report = parse_bounce(data)
    assert report is not None
    assert report.action == "failed" and report.recipient == "compta@partner.example"


def test_global_delivery_status_read_as_text() -> None:
    data = postfix_dsn().replace(b"message/delivery-status", b"message/global-delivery-status")
    assert parse_bounce(data) == parse_bounce(postfix_dsn())


def test_report_without_diagnostic_code_takes_the_notice_line() -> None:
    data = postfix_dsn()
    start = data.index(b"Diagnostic-Code:")
    end = data.index(b"\r\n\r\n", start)
    report = parse_bounce(data[:start] + data[end:])
    assert report is not None and report.permanent is True
    assert report.diagnostic is not None
    assert "550 5.1.1 <compta@partner.example>: Recipient address rejected" in report.diagnostic


def test_plain_text_postfix_bounce() -> None:
    report = parse_bounce(PLAIN_POSTFIX)
    assert report is not None
    assert report.permanent is True
    assert report.status == "5.1.1"
    assert report.action == "failed"
    assert report.recipient == "compta@partner.example"
    assert report.diagnostic == (
        "<compta@partner.example>: host mx.partner.example[203.0.113.7] said: 550 5.1.1 "
        "<compta@partner.example>: Recipient address rejected: User unknown in virtual "
        "mailbox table (in reply to RCPT TO command)"
    )


def test_qmail_bounce() -> None:
    report = parse_bounce(QMAIL)
    assert report is not None
    assert report.permanent is True
    assert report.status == "5.1.1"
    assert report.diagnostic == (
        "Remote host said: 550 5.1.1 <compta@partner.example>... User unknown"
    )
    assert report.recipient == "compta@partner.example"


def test_auto_reply_is_not_a_bounce() -> None:
    assert parse_bounce(AUTO_REPLY) is None
    quoting = AUTO_REPLY.replace(b"Marie Martin\r\n", b"550 5.1.1 quoted from elsewhere\r\n")
    assert parse_bounce(quoting) is None


def test_ordinary_mail_is_not_a_bounce() -> None:
    assert parse_bounce(original_message()) is None
    human = crlf(
        "From: Paul <paul@partner.example>\nSubject: Re: facture\n\n"
        "Bien reçu, merci. Version 5.1.1 du logiciel.\n"
    )
    assert parse_bounce(human) is None


def test_unmarked_full_smtp_reply_counts() -> None:
    data = crlf(
        "From: relay@partner.example\nSubject: Your mail\n\n"
        "Delivery to compta@partner.example stopped:\n"
        "550 5.7.1 Message rejected as spam\n"
    )
    report = parse_bounce(data)
    assert report is not None
    assert report.permanent is True and report.status == "5.7.1"
    assert report.diagnostic == "550 5.7.1 Message rejected as spam"


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"\x00\xff\xfe" * 1000,
        b"garbage without headers\r\n\r\n\x00\x01",
        b"Content-Type: multipart/report; report-type=delivery-status; boundary=\r\n\r\n--",
        b"Content-Type: message/delivery-status\r\n\r\n\r\n\r\n",
        b"Content-Type: multipart/report; boundary=x\r\n\r\n--x\r\n"
        b"Content-Type: message/delivery-status\r\nContent-Transfer-Encoding: base64\r\n\r\n"
        b"!!!not base64!!!\r\n--x--\r\n",
        bytes(random.Random(7).getrandbits(8) for _ in range(5000)),
    ],
)
def test_garbage_is_not_a_bounce(raw: bytes) -> None:
    assert parse_bounce(raw) is None


def test_never_raises_on_damaged_bounces() -> None:
    rng = random.Random(1234)
    samples = [postfix_dsn(), exchange_ndr(), postfix_delayed(), PLAIN_POSTFIX, QMAIL]
    for sample in samples:
        for cut in range(0, len(sample), 97):
            parse_bounce(sample[:cut])
        for _ in range(30):
            damaged = bytearray(sample)
            for _ in range(20):
                damaged[rng.randrange(len(damaged))] = rng.randrange(256)
            result = parse_bounce(bytes(damaged))
            assert result is None or isinstance(result, BounceReport)


def test_report_part_labelled_text_plain() -> None:
    data = postfix_dsn().replace(
        b"Content-Type: message/delivery-status", b"Content-Type: text/plain"
    )
    assert parse_bounce(data) == parse_bounce(postfix_dsn())


def test_auto_reply_with_null_return_path_is_not_a_bounce() -> None:
    # RFC 3834 auto-replies go to the envelope sender, i.e. the bounce address.
    data = b"Return-Path: <>\r\n" + AUTO_REPLY.replace(b"X-Autoreply: yes\r\n", b"")
    assert parse_bounce(data) is None
    plain = crlf(
        "Return-Path: <>\nFrom: compta@partner.example\nSubject: Out of Office\n\n"
        "I am away. Your message will not be delivered to me until Monday.\n"
    )
    assert parse_bounce(plain) is None


def test_reply_about_a_delivery_is_not_a_bounce() -> None:
    data = crlf(
        "From: Paul <paul@partner.example>\n"
        "Subject: Re: facture not delivered?\n\n"
        "Hello, the invoice was rejected by our accounting, please check.\n"
    )
    assert parse_bounce(data) is None


def test_mailer_daemon_notice_without_any_code() -> None:
    data = crlf(
        "From: Mail Delivery Subsystem <MAILER-DAEMON@mx.partner.example>\n"
        "Subject: Returned mail: see transcript for details\n\n"
        "The original message was received from mail.welyb.fr\n"
        "\n"
        "   ----- The following addresses had permanent fatal errors -----\n"
        "<compta@partner.example>\n"
        "    (reason: mailbox disabled)\n"
    )
    report = parse_bounce(data)
    assert report is not None
    assert report.permanent is True and report.status is None and report.action == "failed"
    assert report.diagnostic is not None and "mailbox disabled" in report.diagnostic
    assert report.recipient == "compta@partner.example"


@pytest.mark.parametrize(
    "body",
    [
        b"550 5.1.1 " + b"a" * 200_000,  # an address-like token with no @
        b"550 5.1.1 " + b"a@" * 100_000,
        b"<script" * 30_000,
        b"<" * 200_000,
        b"5." * 100_000,
    ],
)
def test_hostile_text_stays_linear(body: bytes) -> None:
    for content_type in (b"text/plain", b"text/html"):
        data = (
            b"From: MAILER-DAEMON@mx.partner.example\r\nSubject: Undelivered Mail\r\n"
            b"Content-Type: " + content_type + b"\r\n\r\n" + body + b"\r\n"
        )
        started = time.perf_counter()
        parse_bounce(data)
        assert time.perf_counter() - started < 5  # quadratic backtracking takes minutes
