"""The `gateway` command: what a mail admin and a cabinet's staff type.

Every verb but `init` takes -c/--config FILE (default: $GATEWAY_CONFIG, else ./gateway.toml);
every listing takes --json. Errors are one line on stderr that says what to fix, exit 1.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import signal
import sys
import threading
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import click
from sqlalchemy import func, select

from gateway.app import Gateway
from gateway.clock import as_utc
from gateway.config import default_toml, load_config, resolve_config_path
from gateway.errors import GatewayError
from gateway.inbound.imap import ImapProblem, MailboxPoller, check_source
from gateway.logs import configure_logging
from gateway.outbound.dkim import (
    KeyStore,
    dns_record_name,
    dns_txt_value,
    generate_key,
)
from gateway.outbound.dnsrecords import (
    DnsLookup,
    DnsLookupError,
    DnspythonLookup,
    check_records,
    expected_records,
)
from gateway.priority import run_at_idle_priority
from gateway.runner import Runner, in_thread
from gateway.storage.accounts import (
    add_cabinet,
    add_company,
    company_id_of,
    set_bot_mail_forwarding,
)
from gateway.storage.connections import (
    add_connection,
    add_document,
    move_document,
    set_switch,
)
from gateway.storage.folders import normalise_path
from gateway.storage.models import (
    BotMail,
    BotMailForward,
    Cabinet,
    Company,
    Connection,
    Delivery,
    DeliveryStatus,
    Document,
    Folder,
    ImapCheckpoint,
    ImapMessage,
    InboundMessage,
    MessageStatus,
    Switch,
)
from gateway.storage.queues.deliveries import TransitionError, retry


class Context:
    def __init__(self, config_path: str | None, *, durable_commits: bool = True) -> None:
        self.config_path = resolve_config_path(config_path)
        self.durable_commits = durable_commits
        self._gateway: Gateway | None = None

    @property
    def gateway(self) -> Gateway:
        if self._gateway is None:
            config = load_config(self.config_path)
            configure_logging(config.logging.level, config.logging.format)
            self._gateway = Gateway.from_config(config, durable_commits=self.durable_commits)
            # Idempotent: a new PostgreSQL database, or a schema from an older release, is
            # brought up to date by whichever command runs first.
            self._gateway.prepare_storage()
        return self._gateway


def config_option(func: Callable[..., Any]) -> Callable[..., Any]:
    return click.option(
        "-c",
        "--config",
        "config_path",
        type=click.Path(dir_okay=False),
        default=None,
        help="Configuration file (default: $GATEWAY_CONFIG, else ./gateway.toml).",
    )(func)


def json_option(func: Callable[..., Any]) -> Callable[..., Any]:
    return click.option("--json", "as_json", is_flag=True, help="Print JSON.")(func)


def main() -> None:
    try:
        cli(standalone_mode=False)
    except click.exceptions.Abort:
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except GatewayError as exc:  # ours: one line, exit 1; anything else is a bug (traceback)
        click.echo(f"gateway: {exc}", err=True)
        sys.exit(1)


@click.group(help=__doc__)
def cli() -> None:
    pass


# -- set-up and running ---------------------------------------------------------------------


@cli.command()
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path))
@click.option("--force", is_flag=True, help="Overwrite an existing gateway.toml.")
def init(directory: Path, force: bool) -> None:
    """Write DIR/gateway.toml (the embedded default), create the database and storage."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "gateway.toml"
    if path.exists() and not force:
        click.echo(f"gateway: {path} exists; keeping it (use --force to overwrite)", err=True)
    else:
        path.write_text(default_toml(directory), encoding="utf-8")
    gw = Context(str(path)).gateway
    gw.prepare_storage()
    click.echo(f"configuration: {path}")
    click.echo(f"database:      {gw.config.database_url}")
    click.echo(f"storage:       {gw.config.storage_path}")
    click.echo(f"next: gateway serve -c {path}")


@cli.command()
@config_option
@click.option("--smtp-host", default=None, help="Listen address (default: smtp.host).")
@click.option("--smtp-port", type=int, default=None, help="Listen port (default: smtp.port).")
def serve(config_path: str | None, smtp_host: str | None, smtp_port: int | None) -> None:
    """Run the SMTP server and filing workers until SIGTERM/SIGINT, then stop cleanly."""
    from gateway.serve import install_fast_event_loop
    from gateway.serve import serve as run

    gw = Context(config_path).gateway
    install_fast_event_loop()
    asyncio.run(run(gw, smtp_host, smtp_port, lambda line: click.echo(line, err=True)))


@cli.command()
@config_option
@click.option("--once", is_flag=True, help="File what is waiting now, then exit.")
def worker(config_path: str | None, once: bool) -> None:
    """Run a filing worker (started by `serve`; run more on other nodes if needed)."""
    # Filing is idempotent (a lost commit is redone), so it need not fsync each commit.
    gw = Context(config_path, durable_commits=False).gateway
    filer = gw.filer()
    runner = Runner("filing", [in_thread(filer.run_once)], gw.config.filing.poll_seconds)
    if once:
        click.echo(f"processed {asyncio.run(runner.drain())} message(s)")
        return
    run_at_idle_priority()  # acknowledging mail comes before filing it
    asyncio.run(_until_signalled(runner))


async def _until_signalled(runner: Runner) -> None:
    """Run `runner` until SIGTERM or SIGINT; it stops between two passes."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await runner.run(stop)


# -- cabinets and companies ------------------------------------------------------------------


@cli.group()
def cabinet() -> None:
    """Accounting firms."""


@cabinet.command("add")
@config_option
@click.argument("slug")
@click.option("--name", default=None)
@click.option("--contact", default=None, help="Where the cabinet's bot mail may be forwarded.")
def cabinet_add(config_path: str | None, slug: str, name: str | None, contact: str | None) -> None:
    """Add a cabinet."""
    gw = Context(config_path).gateway
    add_cabinet(gw.db, slug, name, contact, gw.clock.now())
    click.echo(f"cabinet {slug} added; its bots: " + ", ".join(_bot_examples(gw, slug)))


def _bot_examples(gw: Gateway, cabinet_slug: str) -> list[str]:
    domain = gw.config.domains[0]
    return [
        f"{p.bot_identity.render({'cabinet': cabinet_slug})}@{domain}"
        for p in gw.registry.partners
        if p.bot_identity is not None and p.bot_scope == "cabinet"
    ]


@cabinet.command("list")
@config_option
@json_option
def cabinet_list(config_path: str | None, as_json: bool) -> None:
    """List cabinets."""
    gw = Context(config_path).gateway
    with gw.db.read() as s:
        rows = [
            {
                "slug": c.slug,
                "name": c.name,
                "contact": c.contact_email,
                "forwarding": "on" if c.forward_bot_mail else "off",
                "created_at": c.created_at,
            }
            for c in s.execute(select(Cabinet).order_by(Cabinet.slug)).scalars()
        ]
    _emit(rows, as_json, ["slug", "name", "contact", "forwarding"])


@cabinet.command("forwarding")
@config_option
@click.argument("slug")
@click.argument("state", type=click.Choice(["on", "off"]))
@click.option("--contact", default=None, help="Set the contact address at the same time.")
def cabinet_forwarding(config_path: str | None, slug: str, state: str, contact: str | None) -> None:
    """Forward the cabinet's bot mail to its contact address (on), or only keep it in the
    bot mailbox (off). Not retroactive; off also stops forwards still waiting."""
    gw = Context(config_path).gateway
    address = set_bot_mail_forwarding(gw.db, slug, state == "on", contact, gw.config.domains)
    if state == "on":
        click.echo(
            f"cabinet {slug}: bot mail received from now on is forwarded to {address}, "
            f"from {gw.config.gateway_sender} (sent by `gateway sender`)"
        )
    else:
        click.echo(f"cabinet {slug}: bot mail is kept in the bot mailbox only")


@cli.group()
def company() -> None:
    """A cabinet's client companies."""


@company.command("add")
@config_option
@click.argument("slug")
@click.option("--cabinet", "cabinet_slug", required=True, help="The cabinet's slug.")
@click.option("--name", default=None)
@click.option("--fiscal-year-end", default="12-31", show_default=True, help="MM-DD")
def company_add(
    config_path: str | None, slug: str, cabinet_slug: str, name: str | None, fiscal_year_end: str
) -> None:
    """Add a company; prints its collection addresses."""
    gw = Context(config_path).gateway
    add_company(gw.db, gw.grammar, slug, cabinet_slug, name, fiscal_year_end, gw.clock.now())
    domain = gw.config.domains[0]
    click.echo(f"company {slug} added to {cabinet_slug}; collection addresses:")
    for journal, folder in gw.config.filing.journals.items():
        click.echo(f"  {journal}+{slug}@{domain}  -> {folder}")
    click.echo(f"  {slug}@{domain}  -> {gw.config.filing.unsorted_folder}")


@company.command("list")
@config_option
@json_option
def company_list(config_path: str | None, as_json: bool) -> None:
    """List companies."""
    gw = Context(config_path).gateway
    with gw.db.read() as s:
        rows = [
            {
                "slug": co.slug,
                "name": co.name,
                "cabinet": ca.slug,
                "fiscal_year_end": co.fiscal_year_end,
                "created_at": co.created_at,
            }
            for co, ca in s.execute(
                select(Company, Cabinet)
                .join(Cabinet, Company.cabinet_id == Cabinet.id)
                .order_by(Company.slug)
            )
        ]
    _emit(rows, as_json, ["slug", "cabinet", "name", "fiscal_year_end"])


# -- the GED ---------------------------------------------------------------------------------


@cli.group()
def folder() -> None:
    """A company's folders."""


@folder.command("tree")
@config_option
@json_option
@click.argument("company_slug")
def folder_tree(config_path: str | None, as_json: bool, company_slug: str) -> None:
    """Show a company's folder tree with document counts."""
    gw = Context(config_path).gateway
    with gw.db.read() as s:
        company_id = company_id_of(s, company_slug)
        folders = (
            s.execute(select(Folder).where(Folder.company_id == company_id).order_by(Folder.path))
            .scalars()
            .all()
        )
        counts: dict[int, int] = {}
        for folder_id in s.execute(
            select(Document.folder_id).where(Document.company_id == company_id)
        ).scalars():
            counts[folder_id] = counts.get(folder_id, 0) + 1
    rows = [{"path": f.path, "documents": counts.get(f.id, 0)} for f in folders]
    if as_json:
        _print_json(rows)
        return
    click.echo(company_slug)
    for row in rows:
        depth = row["path"].count("/")
        name = row["path"].rsplit("/", 1)[-1]
        suffix = f"  ({row['documents']})" if row["documents"] else ""
        click.echo(f"{'  ' * (depth + 1)}{name}/{suffix}")


@cli.group()
def documents() -> None:
    """Documents in the GED."""


@documents.command("list")
@config_option
@json_option
@click.option("--company", "company_slug", default=None)
@click.option("--folder", "folder_path", default=None, help="This folder and its sub-folders.")
def documents_list(
    config_path: str | None, as_json: bool, company_slug: str | None, folder_path: str | None
) -> None:
    """List documents, newest last."""
    gw = Context(config_path).gateway
    query = (
        select(
            Document,
            Company.slug,
            Folder.path,
            InboundMessage.header_message_id,
            InboundMessage.queue_id,
        )
        .join(Company, Document.company_id == Company.id)
        .join(Folder, Document.folder_id == Folder.id)
        .outerjoin(InboundMessage, Document.inbound_message_id == InboundMessage.id)
        .order_by(Document.id)
    )
    if company_slug:
        query = query.where(Company.slug == company_slug)
    if folder_path:
        path = normalise_path(folder_path)
        query = query.where((Folder.path == path) | Folder.path.startswith(path + "/"))
    with gw.db.read() as s:
        if company_slug:
            company_id_of(s, company_slug)
        rows = [
            {
                "id": d.id,
                "company": slug,
                "folder": path,
                "filename": d.filename,
                "media_type": d.media_type,
                "size": d.size,
                "sha256": d.sha256,
                "source": d.source,
                "source_mailbox": d.source_mailbox,
                "origin": d.origin,
                "placed_at": d.placed_at,
                "message_id": message_id,
                "queue_id": queue_id,
            }
            for d, slug, path, message_id, queue_id in s.execute(query)
        ]
    _emit(rows, as_json, ["id", "company", "folder", "filename", "media_type", "size", "source"])


@cli.group()
def messages() -> None:
    """The inbound log."""


@messages.command("list")
@config_option
@json_option
@click.option("--status", type=click.Choice([s.value for s in MessageStatus]), default=None)
@click.option("--limit", type=int, default=100, show_default=True)
def messages_list(config_path: str | None, as_json: bool, status: str | None, limit: int) -> None:
    """List received messages, newest first: envelope, status, reason."""
    gw = Context(config_path).gateway
    query = select(InboundMessage).order_by(InboundMessage.id.desc()).limit(limit)
    if status:
        query = query.where(InboundMessage.status == status)
    with gw.db.read() as s:
        rows = [
            {
                "queue_id": m.queue_id,
                "received_at": m.received_at,
                "source": m.source,
                "source_mailbox": m.source_mailbox,
                "peer": m.peer,
                "mail_from": m.mail_from,
                "rcpt_tos": m.rcpt_tos,
                "size": m.size,
                "message_id": m.header_message_id,
                "subject": m.subject,
                "status": m.status,
                "reason": m.reason,
                "attempts": m.attempts,
            }
            for m in s.execute(query).scalars()
        ]
    _emit(rows, as_json, ["queue_id", "received_at", "mail_from", "rcpt_tos", "status", "reason"])


@cli.group("bot-mail")
def bot_mail() -> None:
    """The cabinets' bot mailboxes (mail to bot identities, R6)."""


@bot_mail.command("list")
@config_option
@json_option
@click.option("--cabinet", "cabinet_slug", default=None)
def bot_mail_list(config_path: str | None, as_json: bool, cabinet_slug: str | None) -> None:
    """List mail received by bot identities."""
    gw = Context(config_path).gateway
    query = (
        select(BotMail, Cabinet.slug, InboundMessage.queue_id, BotMailForward)
        .outerjoin(Cabinet, BotMail.cabinet_id == Cabinet.id)
        .join(InboundMessage, BotMail.inbound_message_id == InboundMessage.id)
        .outerjoin(BotMailForward, BotMailForward.bot_mail_id == BotMail.id)
        .order_by(BotMail.id)
    )
    if cabinet_slug:
        query = query.where(Cabinet.slug == cabinet_slug)
    with gw.db.read() as s:
        rows = [
            {
                "id": b.id,
                "cabinet": slug,
                "recipient": b.recipient,
                "partner": b.partner,
                "mail_from": b.mail_from,
                "subject": b.subject,
                "received_at": b.received_at,
                "queue_id": queue_id,
                # None: not forwarded (forwarding off, or the message's other bot mail was)
                "forward": f.status if f else None,
                "forward_to": f.to_address if f else None,
                "forward_attempts": f.attempts if f else None,
                "forward_reason": f.reason if f else None,
                "forwarded_at": f.sent_at if f else None,
            }
            for b, slug, queue_id, f in s.execute(query)
        ]
    _emit(
        rows,
        as_json,
        ["id", "cabinet", "recipient", "mail_from", "subject", "received_at", "forward"],
    )


@documents.command("add")
@config_option
@click.option("--company", "company_slug", required=True)
@click.option("--folder", "folder_path", required=True)
@click.argument(
    "files", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path)
)
def documents_add(
    config_path: str | None, company_slug: str, folder_path: str, files: tuple[Path, ...]
) -> None:
    """Place files in a company's folder by hand (an upload, R11)."""
    gw = Context(config_path).gateway
    for file in files:
        document, deliveries = add_document(
            gw.db, gw.grammar, gw.blobs, company_slug, folder_path, file, gw.clock.now()
        )
        click.echo(
            f"document #{document.id} {document.filename} placed in {folder_path}"
            + (f"; {len(deliveries)} delivery(ies) queued" if deliveries else "")
        )


@documents.command("move")
@config_option
@click.argument("document_id", type=int)
@click.option("--folder", "folder_path", required=True)
def documents_move(config_path: str | None, document_id: int, folder_path: str) -> None:
    """Move a document to another folder (a move into a switched folder is a placement)."""
    gw = Context(config_path).gateway
    _, deliveries = move_document(gw.db, gw.grammar, document_id, folder_path, gw.clock.now())
    click.echo(
        f"document #{document_id} moved to {folder_path}"
        + (f"; {len(deliveries)} delivery(ies) queued" if deliveries else "")
    )


@cli.group()
def connection() -> None:
    """A company connected to a partner tool."""


@connection.command("add")
@config_option
@click.option("--company", "company_slug", required=True)
@click.option("--partner", required=True, help="myunisoft, meg, quickbooks, jefacture, upflow")
@click.option("--address", required=True, help="What the partner's settings say to enter.")
def connection_add(config_path: str | None, company_slug: str, partner: str, address: str) -> None:
    """Connect a company to a partner; the address is checked and parsed."""
    gw = Context(config_path).gateway
    c = add_connection(gw.db, gw.grammar, company_slug, partner, address, gw.clock.now())
    sender = c.sender or "the gateway's sender"
    click.echo(
        f"{company_slug} connected to {c.partner}: documents go to {c.destination}, from {sender}"
    )


@connection.command("list")
@config_option
@json_option
def connection_list(config_path: str | None, as_json: bool) -> None:
    """List connections."""
    gw = Context(config_path).gateway
    with gw.db.read() as s:
        rows = [
            {
                "id": c.id,
                "company": slug,
                "partner": c.partner,
                "entered": c.entered_address,
                "destination": c.destination,
                "sender": c.sender,
                "created_at": c.created_at,
            }
            for c, slug in s.execute(
                select(Connection, Company.slug)
                .join(Company, Connection.company_id == Company.id)
                .order_by(Connection.id)
            )
        ]
    _emit(rows, as_json, ["id", "company", "partner", "destination", "sender"])


@cli.group()
def switch() -> None:
    """Switch a connection on or off for a folder and its sub-folders."""


@switch.command("on")
@config_option
@click.option("--company", "company_slug", required=True)
@click.option("--folder", "folder_path", required=True)
@click.option("--partner", required=True)
def switch_on(config_path: str | None, company_slug: str, folder_path: str, partner: str) -> None:
    """From now on, documents placed in FOLDER or below go to PARTNER (R9, R10)."""
    gw = Context(config_path).gateway
    set_switch(gw.db, company_slug, folder_path, partner, True, gw.clock.now())
    click.echo(
        f"{partner} switched on for {company_slug}:{folder_path} and its sub-folders; "
        "documents already there are not sent"
    )


@switch.command("off")
@config_option
@click.option("--company", "company_slug", required=True)
@click.option("--folder", "folder_path", required=True)
@click.option("--partner", required=True)
def switch_off(config_path: str | None, company_slug: str, folder_path: str, partner: str) -> None:
    """Stop sending documents placed in FOLDER from now on."""
    gw = Context(config_path).gateway
    set_switch(gw.db, company_slug, folder_path, partner, False, gw.clock.now())
    click.echo(f"{partner} switched off for {company_slug}:{folder_path}")


@switch.command("list")
@config_option
@json_option
def switch_list(config_path: str | None, as_json: bool) -> None:
    """List switches."""
    gw = Context(config_path).gateway
    with gw.db.read() as s:
        rows = [
            {
                "company": slug,
                "partner": c.partner,
                "folder": path,
                "on": sw.is_on,
                "turned_on_at": sw.turned_on_at,
                "turned_off_at": sw.turned_off_at,
            }
            for sw, c, slug, path in s.execute(
                select(Switch, Connection, Company.slug, Folder.path)
                .join(Connection, Switch.connection_id == Connection.id)
                .join(Company, Connection.company_id == Company.id)
                .join(Folder, Switch.folder_id == Folder.id)
                .order_by(Switch.id)
            )
        ]
    _emit(rows, as_json, ["company", "partner", "folder", "on", "turned_on_at"])


@cli.group()
def deliveries() -> None:
    """The outbound ledger: one delivery per document and connection."""


@deliveries.command("list")
@config_option
@json_option
@click.option("--company", "company_slug", default=None)
@click.option("--status", type=click.Choice([s.value for s in DeliveryStatus]), default=None)
def deliveries_list(
    config_path: str | None, as_json: bool, company_slug: str | None, status: str | None
) -> None:
    """List deliveries with their state and reason."""
    gw = Context(config_path).gateway
    query = (
        select(Delivery, Connection, Company.slug, Document.filename)
        .join(Connection, Delivery.connection_id == Connection.id)
        .join(Company, Connection.company_id == Company.id)
        .join(Document, Delivery.document_id == Document.id)
        .order_by(Delivery.id)
    )
    if company_slug:
        query = query.where(Company.slug == company_slug)
    if status:
        query = query.where(Delivery.status == status)
    with gw.db.read() as s:
        rows = [
            {
                "id": d.id,
                "company": slug,
                "partner": c.partner,
                "document_id": d.document_id,
                "filename": filename,
                "destination": c.destination,
                "status": d.status,
                "due_at": d.due_at,
                "attempts": d.attempts,
                "reason": d.reason,
                "sent_at": d.sent_at,
            }
            for d, c, slug, filename in s.execute(query)
        ]
    _emit(rows, as_json, ["id", "company", "partner", "filename", "status", "due_at", "reason"])


@deliveries.command("retry")
@config_option
@click.argument("delivery_id", type=int)
def deliveries_retry(config_path: str | None, delivery_id: int) -> None:
    """Queue a failed, bounced or skipped delivery again, due now."""
    gw = Context(config_path).gateway
    try:
        with gw.db.write() as s:
            retry(s, delivery_id, gw.clock.now())
    except TransitionError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"delivery {delivery_id} queued again")


@deliveries.command("flush")
@config_option
@click.option("--partner", default=None, help="Only this partner's deliveries.")
def deliveries_flush(config_path: str | None, partner: str | None) -> None:
    """Send everything waiting now, whatever the schedule (like `postqueue -f`)."""
    gw = Context(config_path).gateway

    async def flush() -> int:
        dispatcher = gw.dispatcher()
        try:
            # One pass: each waiting delivery is tried once (a partner answering 4xx is
            # not hammered until it gives in).
            return await dispatcher.run_once(flush=True, partner=partner)
        finally:
            await dispatcher.close()

    click.echo(f"tried {asyncio.run(flush())} delivery(ies); see `gateway deliveries list`")


@cli.command()
@config_option
@click.option("--once", is_flag=True, help="Send what is due now, then exit.")
@click.option(
    "--interval", type=float, default=30.0, show_default=True, help="Seconds between runs."
)
def sender(config_path: str | None, once: bool, interval: float) -> None:
    """Run a sending worker: due deliveries out on each partner's schedule (R12), and bot
    mail forwards to cabinet contacts (R6)."""
    gw = Context(config_path).gateway

    async def loop() -> None:
        dispatcher = gw.dispatcher()
        forwarder = gw.forwarder(dispatcher.transport)  # one connection pool for both
        runner = Runner("sending", [dispatcher.run_once, forwarder.run_once], interval)
        try:
            await (runner.drain() if once else _until_signalled(runner))
        finally:
            await dispatcher.close()

    asyncio.run(loop())


@cli.group()
def imap() -> None:
    """IMAP sources: existing mailboxes pulled into the filing pipeline."""


@imap.command("test")
@config_option
@click.argument("source_name", metavar="SOURCE")
def imap_test(config_path: str | None, source_name: str) -> None:
    """Log in to SOURCE and check its folders; say what is wrong in plain words."""
    gw = Context(config_path).gateway
    source = gw.imap_source(source_name)
    try:
        lines = check_source(source)
    except ImapProblem as exc:
        click.echo(f"gateway: imap source {source_name}: {exc}", err=True)
        sys.exit(1)
    for line in lines:
        click.echo(line)
    click.echo(f"imap source {source_name}: ok")


@imap.command("sync")
@config_option
@click.argument("source_name", metavar="SOURCE")
@click.option("--once", is_flag=True, help="Drain the folders now, then exit.")
def imap_sync(config_path: str | None, source_name: str, once: bool) -> None:
    """Read SOURCE's folders into the gateway (with --once: what is there now)."""
    gw = Context(config_path).gateway
    source = gw.imap_source(source_name)
    stop = _stop_on_signals()
    pollers = gw.imap_pollers(source, stop)
    if not once:
        _run_pollers(pollers, stop)
        return
    failed = False
    for poller in pollers:
        with _ProgressBar(f"{source_name} {poller.folder}") as bar:
            try:
                result = poller.run(once=True, progress=bar.update)
            except ImapProblem as exc:
                click.echo(f"gateway: imap source {source_name}: {exc}", err=True)
                failed = True
                continue
        click.echo(
            f"{source_name} {poller.folder}: {result.taken} taken, {result.stored} to filing, "
            f"{result.rejected} rejected, {result.duplicates} already taken before, "
            f"{result.settled} moved or flagged"
        )
    if failed:
        sys.exit(1)


@imap.command("run")
@config_option
def imap_run(config_path: str | None) -> None:
    """Read every configured source until SIGTERM (started by `serve`)."""
    gw = Context(config_path).gateway
    stop = _stop_on_signals()
    pollers = [p for s in gw.config.imap_sources.values() for p in gw.imap_pollers(s, stop)]
    _run_pollers(pollers, stop)


@imap.command("status")
@config_option
@json_option
def imap_status(config_path: str | None, as_json: bool) -> None:
    """Where each source's folders stand: checkpoint, reader, last error."""
    gw = Context(config_path).gateway
    with gw.db.read() as s:
        checkpoints = {(c.source, c.folder): c for c in s.execute(select(ImapCheckpoint)).scalars()}
        taken = dict(
            s.execute(
                select(
                    ImapMessage.source + "/" + ImapMessage.folder, func.count(ImapMessage.id)
                ).group_by(ImapMessage.source, ImapMessage.folder)
            ).all()
        )
    rows = []
    for source in gw.config.imap_sources.values():
        for folder in source.folders:
            c = checkpoints.get((source.name, folder))
            rows.append(
                {
                    "source": source.name,
                    "folder": folder,
                    "uidvalidity": c.uidvalidity if c else None,
                    "last_uid": c.last_uid if c else None,
                    "taken": taken.get(f"{source.name}/{folder}", 0),
                    "reader": c.claimed_by if c else None,
                    "last_sync_at": c.last_sync_at if c else None,
                    "last_error": c.last_error if c else None,
                }
            )
    _emit(
        rows,
        as_json,
        [
            "source",
            "folder",
            "uidvalidity",
            "last_uid",
            "taken",
            "reader",
            "last_sync_at",
            "last_error",
        ],
    )


def _stop_on_signals() -> threading.Event:
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    return stop


def _run_pollers(pollers: Sequence[MailboxPoller], stop: threading.Event) -> None:
    """One thread per folder (IMAP IDLE watches one selected folder per connection)."""
    threads = [
        threading.Thread(target=p.run, kwargs={"once": False}, name=f"imap-{p.folder}", daemon=True)
        for p in pollers
    ]
    for t in threads:
        t.start()
    while any(t.is_alive() for t in threads) and not stop.wait(1.0):
        pass
    stop.set()
    for t in threads:
        t.join(timeout=30)


class _ProgressBar:
    """A progress bar on a terminal; nothing when output goes to a file or a pipe."""

    def __init__(self, label: str) -> None:
        self.label = label
        self.bar: Any = None
        self.shown = 0

    def __enter__(self) -> _ProgressBar:
        return self

    def update(self, done: int, total: int) -> None:
        if not sys.stderr.isatty() or total == 0:
            return
        if self.bar is None:
            self.bar = click.progressbar(length=total, label=self.label, file=sys.stderr)
            self.bar.__enter__()
        self.bar.update(done - self.shown)
        self.shown = done

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.__exit__(None, None, None)


@cli.group()
def dkim() -> None:
    """DKIM keys (R15, R18)."""


@dkim.command("keygen")
@config_option
@click.option("--domain", required=True)
@click.option("--selector", required=True)
@click.option(
    "--algorithm",
    type=click.Choice(["rsa-sha256", "ed25519-sha256"]),
    default="rsa-sha256",
    show_default=True,
)
def dkim_keygen(config_path: str | None, domain: str, selector: str, algorithm: str) -> None:
    """Generate a key pair, store the private key, print the DNS TXT record to publish."""
    gw = Context(config_path).gateway
    store = KeyStore(gw.config.dkim_path)
    key = generate_key(domain, selector, algorithm)
    path = store.save(key)
    click.echo(f"private key: {path}")
    value = dns_txt_value(key)
    # A TXT string holds 255 octets at most: longer values are published as several strings.
    strings = " ".join(f'"{value[i : i + 255]}"' for i in range(0, len(value), 255))
    click.echo(f"publish: {dns_record_name(key)}. IN TXT {strings}")


@cli.group()
def dns() -> None:
    """The DNS records to publish (R18)."""


@dns.command("records")
@config_option
@json_option
def dns_records(config_path: str | None, as_json: bool) -> None:
    """MX, SPF, DKIM and DMARC records for every served domain."""
    gw = Context(config_path).gateway
    rows = [
        {"domain": r.domain, "name": r.name, "type": r.type, "value": r.value}
        for r in expected_records(gw.config, KeyStore(gw.config.dkim_path))
    ]
    _emit(rows, as_json, ["name", "type", "value"])


def _ip_addresses(
    ctx: click.Context, param: click.Parameter, values: tuple[str, ...]
) -> tuple[str, ...]:
    for value in values:
        try:
            ipaddress.ip_address(value)
        except ValueError:
            raise click.BadParameter(f"{value!r} is not an IP address") from None
    return values


@dns.command("check")
@config_option
@json_option
@click.option(
    "--timeout",
    type=click.FloatRange(0.1, 60),
    default=5.0,
    show_default=True,
    help="Seconds one lookup may take.",
)
@click.option(
    "--nameserver",
    "nameservers",
    multiple=True,
    metavar="IP",
    callback=_ip_addresses,
    help="Ask this server (repeatable), e.g. the zone's primary before a change has "
    "propagated. Default: the system's resolver.",
)
def dns_check(
    config_path: str | None, as_json: bool, timeout: float, nameservers: tuple[str, ...]
) -> None:
    """Compare the records of `dns records` with what DNS answers (--json: the answers).

    One line per record: ok, missing, different or error (the lookup failed). Exit 1 unless
    every record is ok."""
    if _dns_check(config_path, as_json, lambda: DnspythonLookup(timeout, nameservers)) != 0:
        sys.exit(1)  # not click's Exit: main() runs click with standalone_mode=False


def _dns_check(config_path: str | None, as_json: bool, make_lookup: Callable[[], DnsLookup]) -> int:
    """`dns check` with the resolver handed in (tests pass a fake); returns the exit code."""
    # Only the configuration and the key store: checking DNS has no business creating or
    # migrating the database, as Context.gateway would.
    config = load_config(Context(config_path).config_path)
    expected = expected_records(config, KeyStore(config.dkim_path))
    try:
        lookup = make_lookup()
    except DnsLookupError as exc:  # no resolver configured on this machine
        raise click.ClickException(str(exc)) from None
    checks = check_records(expected, lookup)
    _emit([c.as_dict() for c in checks], as_json, ["name", "type", "status", "detail"])
    return 0 if all(c.ok for c in checks) else 1


# -- output ----------------------------------------------------------------------------------


def _jsonable(value: Any) -> Any:
    if isinstance(value, datetime):
        return as_utc(value).isoformat()
    return value


def _print_json(rows: Sequence[dict[str, Any]]) -> None:
    click.echo(
        json.dumps(
            [{k: _jsonable(v) for k, v in r.items()} for r in rows], ensure_ascii=False, indent=2
        )
    )


def _emit(rows: Sequence[dict[str, Any]], as_json: bool, columns: Iterable[str]) -> None:
    if as_json:
        _print_json(rows)
        return
    columns = list(columns)
    if not rows:
        click.echo("(none)")
        return
    cells = [[_cell(r.get(c)) for c in columns] for r in rows]
    widths = [min(60, max(len(c), *(len(row[i]) for row in cells))) for i, c in enumerate(columns)]
    click.echo("  ".join(c.upper().ljust(w) for c, w in zip(columns, widths, strict=True)))
    for row in cells:
        click.echo("  ".join(v[:w].ljust(w) for v, w in zip(row, widths, strict=True)))


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, datetime):
        return as_utc(value).strftime("%Y-%m-%d %H:%M:%S")
    if isinstance(value, list):
        return ",".join(str(v) for v in value)
    return str(value)
