"""message trust (issue 11): authentication results kept with each inbound message, the
`quarantined` and `discarded` statuses, the quarantined copy and the release flag

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-30 05:30:00

The status values are written out here (see 0005): this revision's list. On SQLite the table
is rebuilt (batch mode) to replace its CHECK constraint.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

BEFORE = (
    "received",
    "filing",
    "filed",
    "partly_filed",
    "duplicate",
    "rejected",
    "bot_mail",
    "bounce",
    "held",
)
AFTER = (*BEFORE, "quarantined", "discarded")


def _check(values: tuple[str, ...]) -> str:
    return "status IN ({})".format(", ".join(f"'{v}'" for v in values))


def upgrade() -> None:
    with op.batch_alter_table("inbound_messages") as batch:
        batch.add_column(sa.Column("authentication", sa.JSON(), nullable=True))
        batch.add_column(sa.Column("quarantine_sha256", sa.String(length=64), nullable=True))
        batch.add_column(
            sa.Column("checks_waived", sa.Boolean(), server_default=sa.false(), nullable=False)
        )
        batch.drop_constraint("ck_inbound_messages_status", type_="check")
        batch.create_check_constraint("ck_inbound_messages_status", _check(AFTER))


def downgrade() -> None:
    with op.batch_alter_table("inbound_messages") as batch:
        batch.drop_constraint("ck_inbound_messages_status", type_="check")
        batch.create_check_constraint("ck_inbound_messages_status", _check(BEFORE))
        batch.drop_column("checks_waived")
        batch.drop_column("quarantine_sha256")
        batch.drop_column("authentication")
