"""Secrets every node shares (issue 14): the VERP secret and the DKIM private keys.

With `[gateway] secrets_key_*` they are sealed in the database, so nodes with different
storage folders on one database sign and verify alike; without, they stay in the storage
folder as before; an upgrade imports the folder's into the database. On SQLite and
PostgreSQL, through the CLI where the CLI is the entry point.
"""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import dkim
import pytest
from sqlalchemy import func, select

from gateway.app import Gateway
from gateway.outbound.dkim import DkimError, DkimSigner, dns_txt_value, generate_key
from gateway.storage.connections import add_connection, add_document, set_switch
from gateway.storage.models import Delivery, GatewaySecret
from gateway.storage.sealed import SealBroken
from gateway.storage.shared_secrets import SharedSecrets
from tests.conftest import load, seeded_gateway, write_config
from tests.support import CaptureServer, FixedClock, message, pdf

KEY = "k" * 40
OTHER_KEY = "o" * 40
ACHATS = "Dossier comptable annuel/2026/Achats"


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway", *args], capture_output=True, text=True, timeout=120
    )


def node(
    tmp_path: Path, database_url: str, name: str, key: str | None, **sections: dict[str, Any]
) -> Path:
    """The configuration of node `name`: its own folder (storage included), the shared
    database, and `key` as its secrets key (None: no key configured)."""
    folder = tmp_path / name
    folder.mkdir(exist_ok=True)
    top: dict[str, Any] = {"node_name": name}
    if key is not None:
        (folder / "secrets.key").write_text(key + "\n")
        top["secrets_key_file"] = str(folder / "secrets.key")
    sections.setdefault("logging", {"format": "json", "level": "info"})
    return write_config(folder, database_url, gateway=top, **sections)


def keygen(config: Path, selector: str = "s2026") -> str:
    """`gateway dkim keygen` for welyb.fr on `config`; the TXT value it says to publish."""
    done = run("dkim", "keygen", "--domain", "welyb.fr", "--selector", selector, "-c", str(config))
    assert done.returncode == 0, done.stderr
    match = re.search(r"IN TXT (.+)$", done.stdout, re.M)
    assert match is not None, done.stdout
    return "".join(re.findall(r'"([^"]*)"', match.group(1)))  # DNS joins the strings


def dkim_record(config: Path) -> str:
    records = json.loads(run("dns", "records", "--json", "-c", str(config)).stdout)
    [value] = [r["value"] for r in records if r["name"] == "s2026._domainkey.welyb.fr"]
    return str(value)


def verifies(data: bytes, record: str) -> bool:
    def dnsfunc(name: bytes, timeout: int = 5) -> bytes:
        return record.encode() if name.decode().rstrip(".") == "s2026._domainkey.welyb.fr" else b""

    return bool(dkim.verify(data, dnsfunc=dnsfunc))


def secret_rows(gateway: Gateway) -> list[str]:
    with gateway.db.read() as s:
        return list(s.execute(select(GatewaySecret.name).order_by(GatewaySecret.name)).scalars())


def opened(config: Path, clock: FixedClock) -> Gateway:
    """A node's gateway, its storage prepared (the schema made when it is the first)."""
    gateway = Gateway.from_config(load(config), clock)
    gateway.prepare_storage()
    return gateway


def test_two_nodes_on_one_database_share_the_verp_secret_and_the_dkim_keys(
    tmp_path, database_url, clock
):
    """A key made by `dkim keygen` on node A signs on node B (its own, empty, storage
    folder): B's message verifies against the record A printed; a bounce address B made
    verifies on A."""
    with CaptureServer() as inbox:
        relay = {"smarthost": {"host": "127.0.0.1", "port": inbox.port, "starttls": False}}
        a = seeded_gateway(node(tmp_path, database_url, "a", KEY, outbound=relay), clock)
        b = opened(node(tmp_path, database_url, "b", KEY, outbound=relay), clock)
        try:
            published = keygen(tmp_path / "a" / "gateway.toml")
            assert dkim_record(tmp_path / "b" / "gateway.toml") == published
            assert secret_rows(a) == ["dkim/welyb.fr/s2026.rsa.pem"]
            # B sends: the document is uploaded through B (its bytes are in B's folder).
            add_connection(
                b.db,
                b.grammar,
                "dupont-maconnerie",
                "meg",
                "meg+macon-dupont@welyb.fr",
                clock.now(),
            )
            set_switch(
                b.db, "dupont-maconnerie", ACHATS, "meg", True, clock.now(), create_folder=True
            )
            clock.advance(minutes=1)
            upload = tmp_path / "f.pdf"
            upload.write_bytes(pdf("Facture 1"))
            add_document(b.db, b.grammar, b.blobs, "dupont-maconnerie", ACHATS, upload, clock.now())

            async def flush() -> int:
                dispatcher = b.dispatcher()
                try:
                    return await dispatcher.run_once(flush=True)
                finally:
                    await dispatcher.close()

            assert asyncio.run(flush()) == 1
            [(mail_from, _, data)] = inbox.accepted
            assert verifies(data, published)
            assert not verifies(data, dns_txt_value(generate_key("welyb.fr", "s2026")))
            with b.db.read() as s:
                delivery_id = s.execute(select(Delivery.id)).scalar_one()
            assert a.bounce_addresses().delivery_of(mail_from) == delivery_id
            assert secret_rows(a) == ["dkim/welyb.fr/s2026.rsa.pem", "verp"]
            # Nothing of it in either storage folder.
            for gateway in (a, b):
                assert not (gateway.config.storage_path / "bounce.key").exists()
                assert not list(gateway.config.dkim_path.rglob("*.pem"))
        finally:
            a.db.dispose()
            b.db.dispose()


def test_nodes_starting_together_end_with_one_verp_secret(tmp_path, database_url, clock):
    """Each node inserts its candidate if there is none, then reads back what was kept."""
    first = opened(node(tmp_path, database_url, "n0", KEY), clock)
    nodes = [first] + [
        Gateway.from_config(load(node(tmp_path, database_url, f"n{i}", KEY)), clock)
        for i in range(1, 6)
    ]
    for gateway in nodes:  # connected beforehand, so that the nodes' first reads coincide
        with gateway.db.read() as s:
            s.execute(select(1))
    start = threading.Barrier(len(nodes))
    tags: list[str] = []

    def start_node(gateway: Gateway) -> None:
        start.wait()
        tags.append(gateway.bounce_addresses().for_delivery(42))

    threads = [threading.Thread(target=start_node, args=(g,)) for g in nodes]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    try:
        assert len(tags) == len(nodes) and len(set(tags)) == 1
        assert secret_rows(first) == ["verp"]
        # The loser of the race: its insert does nothing, and it reads the winner's value.
        shared = first.shared_secrets
        assert shared is not None
        kept = shared.get("verp")
        assert shared.add("verp", "another") is False and shared.get("verp") == kept
        assert shared.first("verp", "another") == (kept, False)
    finally:
        for gateway in nodes:
            gateway.db.dispose()


def test_a_node_with_another_key_stops_in_one_line_naming_the_setting(
    tmp_path, database_url, clock
):
    a = opened(node(tmp_path, database_url, "a", KEY), clock)
    b = opened(node(tmp_path, database_url, "b", OTHER_KEY), clock)
    try:
        keygen(tmp_path / "a" / "gateway.toml")
        a.bounce_addresses()
        done = run("dns", "records", "-c", str(tmp_path / "b" / "gateway.toml"))
        assert done.returncode == 1 and done.stdout == ""
        [line] = [x for x in done.stderr.splitlines() if x.startswith("gateway:")]
        assert "gateway.secrets_key_env / secrets_key_file" in line
        assert "dkim/welyb.fr/s2026.rsa.pem" in line and "Traceback" not in done.stderr
        with pytest.raises(SealBroken, match=r"gateway secret verp .*secrets_key_file"):
            b.bounce_addresses()
        # A value copied to another name does not open there either (bound to its name).
        with a.db.write() as s:
            row = s.get(GatewaySecret, "verp")
            assert row is not None
            s.add(
                GatewaySecret(
                    name="dkim/welyb.fr/x.rsa.pem", sealed=row.sealed, created_at=row.created_at
                )
            )
        with pytest.raises(SealBroken):
            a.dkim_keys.all()
    finally:
        a.db.dispose()
        b.db.dispose()


def test_without_a_key_the_secrets_stay_in_the_storage_folder(tmp_path, database_url, clock):
    """The single-node default: no key to make; files as before, nothing in the database."""
    config = node(tmp_path, database_url, "solo", None)
    gateway = seeded_gateway(config, clock)
    try:
        done = run(
            "dkim", "keygen", "--domain", "welyb.fr", "--selector", "s2026", "-c", str(config)
        )
        assert done.returncode == 0, done.stderr
        pem = gateway.config.dkim_path / "welyb.fr" / "s2026.rsa.pem"
        assert f"private key: {pem}" in done.stdout and pem.is_file()
        assert pem.stat().st_mode & 0o777 == 0o600
        address = gateway.bounce_addresses().for_delivery(7)
        secret = gateway.config.storage_path / "bounce.key"
        assert len(secret.read_bytes()) == 32
        again = Gateway.from_config(load(config), clock)
        assert again.bounce_addresses().delivery_of(address) == 7  # the file, read again
        assert gateway.shared_secrets is None and secret_rows(gateway) == []
    finally:
        gateway.db.dispose()


def test_an_upgrade_imports_the_folder_secrets_once(tmp_path, database_url, clock):
    """A gateway that kept its secrets in the folder gets a key: bounce addresses already
    sent still verify, the published selector keeps its record, a second node with an empty
    folder gets both; the import is logged once."""
    config = node(tmp_path, database_url, "a", None)
    before = seeded_gateway(config, clock)
    published = keygen(config)
    sent = before.bounce_addresses().for_delivery(12345)
    before.db.dispose()

    keyed = node(tmp_path, database_url, "a", KEY)  # the same folder, now with a key
    flush = run("deliveries", "flush", "-c", str(keyed))
    assert flush.returncode == 0, flush.stderr
    assert '"event": "verp_secret_imported"' in flush.stderr
    assert '"event": "dkim_key_imported"' in flush.stderr
    again = run("deliveries", "flush", "-c", str(keyed))
    assert again.returncode == 0 and "imported" not in again.stderr  # once
    assert dkim_record(keyed) == published

    other = opened(node(tmp_path, database_url, "b", KEY), clock)
    try:
        assert secret_rows(other) == ["dkim/welyb.fr/s2026.rsa.pem", "verp"]
        assert other.bounce_addresses().delivery_of(sent) == 12345
        signed = DkimSigner(other.dkim_keys.keys_for("welyb.fr")).sign(
            message(sender="documents@welyb.fr"), "welyb.fr"
        )
        assert verifies(signed, published)
    finally:
        other.db.dispose()


def test_a_folder_secret_that_differs_from_the_database_is_not_imported(
    tmp_path, database_url, clock
):
    """The database's value wins over a stale file, with a warning, never silently."""
    a = opened(node(tmp_path, database_url, "a", KEY), clock)
    stale = tmp_path / "b" / "storage"
    try:
        keygen(tmp_path / "a" / "gateway.toml")
        expected = a.bounce_addresses().for_delivery(1)
        (stale / "dkim" / "welyb.fr").mkdir(parents=True)
        (stale / "dkim" / "welyb.fr" / "s2026.rsa.pem").write_bytes(
            generate_key("welyb.fr", "s2026").private_key_pem
        )
        (stale / "bounce.key").write_bytes(b"x" * 32)
        config = node(tmp_path, database_url, "b", KEY)
        flush = run("deliveries", "flush", "-c", str(config))
        assert flush.returncode == 0, flush.stderr
        assert '"event": "verp_secret_file_ignored"' in flush.stderr
        assert '"event": "dkim_key_file_ignored"' in flush.stderr
        b = opened(config, clock)
        assert b.bounce_addresses().for_delivery(1) == expected
        assert dkim_record(config) == dkim_record(tmp_path / "a" / "gateway.toml")
        b.db.dispose()
    finally:
        a.db.dispose()


def test_a_published_selector_is_never_overwritten_in_the_database(tmp_path, database_url, clock):
    config = node(tmp_path, database_url, "a", KEY)
    gateway = opened(config, clock)
    try:
        keygen(config)
        again = run(
            "dkim", "keygen", "--domain", "welyb.fr", "--selector", "s2026", "-c", str(config)
        )
        assert (
            again.returncode == 1
            and "s2026" in again.stderr
            and "never overwritten" in again.stderr
        )
        store = gateway.dkim_keys
        replacement = generate_key("welyb.fr", "s2026")
        with pytest.raises(DkimError, match="never overwritten"):
            store.save(replacement)
        store.save(replacement, overwrite=True)
        assert store.keys_for("WELYB.FR.") == [replacement] and store.keys_for("welyb.com") == []
        ed = generate_key("welyb.fr", "s2026", "ed25519-sha256")
        store.save(ed)
        assert [k.algorithm for k in store.all()] == ["rsa-sha256", "ed25519-sha256"]
        with gateway.db.read() as s:
            assert s.execute(select(func.count()).select_from(GatewaySecret)).scalar_one() == 2
        assert isinstance(gateway.shared_secrets, SharedSecrets)
    finally:
        gateway.db.dispose()
