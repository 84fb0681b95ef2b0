"""queue histories: every move of an inbound message and of a bot mail forward, as for
deliveries (`delivery_events`)

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-29 23:55:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

HISTORIES = {
    "inbound_message_events": ("inbound_message_id", "inbound_messages.id"),
    "bot_mail_forward_events": ("forward_id", "bot_mail_forwards.id"),
}


def upgrade() -> None:
    for table, (column, target) in HISTORIES.items():
        op.create_table(
            table,
            sa.Column("id", sa.Integer(), nullable=False),
            sa.Column(column, sa.Integer(), nullable=False),
            sa.Column("at", sa.DateTime(timezone=True), nullable=False),
            sa.Column("from_status", sa.String(length=16), nullable=True),
            sa.Column("to_status", sa.String(length=16), nullable=False),
            sa.Column("detail", sa.Text(), nullable=True),
            sa.ForeignKeyConstraint([column], [target]),
            sa.PrimaryKeyConstraint("id"),
        )
        op.create_index(f"ix_{table}_{column}", table, [column])


def downgrade() -> None:
    for table, (column, _) in HISTORIES.items():
        op.drop_index(f"ix_{table}_{column}", table_name=table)
        op.drop_table(table)
