"""status columns checked by the database: CHECK constraints naming the allowed values

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-29 23:00:00

The values are written out here, not imported from the enums: a migration describes the
schema at its revision, and a new state later comes with a new migration.
On SQLite the tables are rebuilt (batch mode): SQLite cannot add a constraint in place.
"""

from __future__ import annotations

from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

CHECKS = {
    ("inbound_messages", "status"): (
        "received",
        "filing",
        "filed",
        "partly_filed",
        "duplicate",
        "rejected",
        "bot_mail",
        "bounce",
        "held",
    ),
    ("deliveries", "status"): (
        "queued",
        "sending",
        "sent",
        "deferred",
        "failed",
        "skipped",
        "bounced",
    ),
    ("bot_mail_forwards", "status"): ("queued", "sending", "sent", "deferred", "failed"),
    ("imap_messages", "outcome"): ("stored", "rejected", "duplicate"),
}


def upgrade() -> None:
    for (table, column), values in CHECKS.items():
        allowed = ", ".join(f"'{v}'" for v in values)
        with op.batch_alter_table(table) as batch:
            batch.create_check_constraint(f"ck_{table}_{column}", f"{column} IN ({allowed})")


def downgrade() -> None:
    for table, column in CHECKS:
        with op.batch_alter_table(table) as batch:
            batch.drop_constraint(f"ck_{table}_{column}", type_="check")
