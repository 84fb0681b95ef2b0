"""The `gateway` command as a user types it."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from click.testing import CliRunner

from gateway.cli import cli
from gateway.config import ConfigError, parse_config
from tests.conftest import write_config
from tests.support import file_all, message, pdf


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway", *args], capture_output=True, text=True, timeout=60
    )


def test_init_writes_config_creates_database_and_storage(tmp_path):
    result = run("init", str(tmp_path / "gw"))
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "gw" / "gateway.toml").is_file()
    assert (tmp_path / "gw" / "gateway.db").is_file()
    assert (tmp_path / "gw" / "storage" / "spool").is_dir()
    config = tmp_path / "gw" / "gateway.toml"
    listing = run("company", "list", "--json", "-c", str(config))
    assert listing.returncode == 0 and json.loads(listing.stdout) == []


def test_config_option_may_come_before_the_verb(tmp_path):
    """The README's `G=".venv/bin/gateway -c var/gateway/gateway.toml"` then `$G verb …`."""
    assert run("init", str(tmp_path / "gw")).returncode == 0
    config = str(tmp_path / "gw" / "gateway.toml")
    before = run("-c", config, "cabinet", "add", "aecconseil", "--name", "AEC Conseil")
    assert before.returncode == 0, before.stderr
    listing = run("-c", config, "cabinet", "list", "--json")
    assert [c["slug"] for c in json.loads(listing.stdout)] == ["aecconseil"]
    # After the verb wins over before it.
    other = run("-c", str(tmp_path / "nope.toml"), "cabinet", "list", "-c", config)
    assert other.returncode == 0, other.stderr


def test_missing_config_says_how_to_create_one(tmp_path):
    result = run("company", "list", "-c", str(tmp_path / "nope.toml"))
    assert result.returncode == 1
    assert "gateway init" in result.stderr


@pytest.mark.parametrize(
    ("data", "key"),
    [
        ({"smtp": {"port": "twenty-five"}}, "smtp.port"),
        ({"smtp": {"port": 70000}}, "smtp.port"),
        ({"smtp": {"prot": 25}}, "'prot'"),
        ({"gateway": {"domains": ["not a domain"]}}, "gateway.domains"),
        ({"database": {"url": "mysql://x"}}, "database.url"),
        ({"filing": {"folder_template": "{year}/{journal_folder}"}}, "filing.folder_template"),
        ({"filing": {"timezone": "Mars/Olympus"}}, "filing.timezone"),
        ({"filing": {"journals": {"Compta Achats": "Achats"}}}, "filing.journals"),
        (
            {"smtp": {"tls_certificate": "/nonexistent.pem", "tls_key": "/nonexistent.key"}},
            "smtp.tls_certificate",
        ),
        ({"smtp": {"tls_certificate": "/x.pem"}}, "set both or neither"),
    ],
)
def test_bad_configuration_names_the_key(tmp_path, data, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.").replace("{", r"\{")):
        parse_config(data, base=tmp_path)


def test_cabinet_and_company_commands(tmp_path):
    config = write_config(tmp_path, f"sqlite:///{tmp_path / 'g.db'}")
    runner = CliRunner()
    c = ["-c", str(config)]
    assert runner.invoke(cli, ["cabinet", "add", "aecconseil", *c]).exit_code == 0
    result = runner.invoke(
        cli,
        [
            "company",
            "add",
            "dupont-maconnerie",
            "--cabinet",
            "aecconseil",
            "--fiscal-year-end",
            "06-30",
            *c,
        ],
    )
    assert result.exit_code == 0, result.output
    assert "compta+dupont-maconnerie@welyb.fr" in result.output
    listed = json.loads(runner.invoke(cli, ["company", "list", "--json", *c]).output)
    assert listed[0]["slug"] == "dupont-maconnerie" and listed[0]["fiscal_year_end"] == "06-30"


@pytest.mark.parametrize(
    ("args", "error"),
    [
        (["company", "add", "Dupont Maconnerie", "--cabinet", "aecconseil"], "lower-case"),
        (["company", "add", "dupont", "--cabinet", "nobody"], "no cabinet 'nobody'"),
        (["company", "add", "compta", "--cabinet", "aecconseil"], "journal name"),
        (["company", "add", "x", "--cabinet", "aecconseil", "--fiscal-year-end", "02-30"], "MM-DD"),
        (["cabinet", "add", "aecconseil"], "already exists"),
        (["cabinet", "add", "cab", "--contact", "not-an-address"], "not an email address"),
    ],
)
def test_bad_input_gets_a_message_that_says_what_to_fix(tmp_path, args, error):
    config = write_config(tmp_path, f"sqlite:///{tmp_path / 'g.db'}")
    assert run("cabinet", "add", "aecconseil", "-c", str(config)).returncode == 0
    result = run(*args, "-c", str(config))
    assert result.returncode == 1
    assert error in result.stderr


def test_listings_show_what_was_filed(gw, config_path, server):
    from tests.test_smtp import send

    send(
        server,
        "compta+dupont-maconnerie@welyb.fr",
        message(attachments=[("facture.pdf", "application/pdf", pdf("cli"))]),
    )
    send(server, "myunisoft+aecconseil@welyb.fr", message(subject="Invitation MyUnisoft"))
    file_all(gw)
    runner = CliRunner()
    c = ["-c", str(config_path)]
    docs = json.loads(runner.invoke(cli, ["documents", "list", "--json", *c]).output)
    assert len(docs) == 1
    doc = docs[0]
    assert {k: doc[k] for k in ("company", "folder", "filename", "media_type", "source")} == {
        "company": "dupont-maconnerie",
        "folder": "Dossier comptable annuel/2026/Achats/11",
        "filename": "facture.pdf",
        "media_type": "application/pdf",
        "source": "smtp",
    }
    assert len(doc["sha256"]) == 64 and doc["message_id"] and doc["placed_at"]
    scoped = json.loads(
        runner.invoke(
            cli,
            [
                "documents",
                "list",
                "--json",
                "--company",
                "dupont-maconnerie",
                "--folder",
                "Dossier comptable annuel/2026",
                *c,
            ],
        ).output
    )
    assert scoped == docs
    other = json.loads(
        runner.invoke(cli, ["documents", "list", "--json", "--folder", "A classer", *c]).output
    )
    assert other == []
    msgs = json.loads(runner.invoke(cli, ["messages", "list", "--json", *c]).output)
    assert sorted(m["status"] for m in msgs) == ["bot_mail", "filed"]
    assert all(m["mail_from"] == "fournisseur@example.org" for m in msgs)
    bots = json.loads(
        runner.invoke(cli, ["bot-mail", "list", "--json", "--cabinet", "aecconseil", *c]).output
    )
    assert [b["subject"] for b in bots] == ["Invitation MyUnisoft"]
    tree = runner.invoke(cli, ["folder", "tree", "dupont-maconnerie", *c]).output
    assert "Achats/" in tree and "11/  (1)" in tree
    unknown = run("folder", "tree", "nobody", *c)
    assert unknown.returncode == 1 and "no company 'nobody'" in unknown.stderr


def test_documents_list_rejects_path_traversal_in_folder_filter(tmp_path):
    config = write_config(tmp_path, f"sqlite:///{tmp_path / 'g.db'}")
    run("init", str(tmp_path))  # keeps the existing gateway.toml, creates the database
    result = run("documents", "list", "--folder", "../..", "-c", str(config))
    assert result.returncode == 1 and "not allowed" in result.stderr


def test_dkim_keygen_and_dns_records(tmp_path):
    """R18: the key pair is generated, and the records to publish are listed."""
    config = write_config(
        tmp_path, f"sqlite:///{tmp_path / 'g.db'}", smtp={"hostname": "mx.welyb.fr"}
    )
    result = run("dkim", "keygen", "--domain", "welyb.fr", "--selector", "s2026", "-c", str(config))
    assert result.returncode == 0, result.stderr
    assert 's2026._domainkey.welyb.fr. IN TXT "v=DKIM1; k=rsa; p=' in result.stdout
    again = run("dkim", "keygen", "--domain", "welyb.fr", "--selector", "s2026", "-c", str(config))
    assert again.returncode == 1 and "s2026" in again.stderr  # never overwrites a key
    records = json.loads(run("dns", "records", "--json", "-c", str(config)).stdout)
    fr = {(r["type"], r["name"]): r["value"] for r in records if r["domain"] == "welyb.fr"}
    assert fr[("MX", "welyb.fr")] == "10 mx.welyb.fr."
    assert fr[("TXT", "welyb.fr")].startswith("v=spf1")
    assert fr[("TXT", "s2026._domainkey.welyb.fr")].startswith("v=DKIM1; k=rsa; p=")
    assert fr[("TXT", "_dmarc.welyb.fr")].startswith("v=DMARC1")
    com = [r for r in records if r["domain"] == "welyb.com" and "_domainkey" in r["name"]]
    assert "gateway dkim keygen --domain welyb.com" in com[0]["value"]


def test_version_names_the_release():
    from importlib.metadata import version

    result = run("--version")
    assert result.returncode == 0 and result.stdout.strip() == f"gateway {version('gateway')}"
