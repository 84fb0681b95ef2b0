"""bot mail forwards: the per-cabinet switch and the forward queue

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-29 10:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # NOT NULL with a server default: existing cabinets get "off", as the issue asks.
    op.add_column(
        "cabinets",
        sa.Column("forward_bot_mail", sa.Boolean(), server_default=sa.false(), nullable=False),
    )
    op.create_table(
        "bot_mail_forwards",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("bot_mail_id", sa.Integer(), nullable=False),
        sa.Column("to_address", sa.String(length=320), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("due_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("claimed_by", sa.String(length=128), nullable=True),
        sa.Column("lease_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("sent_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["bot_mail_id"], ["bot_mail.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("bot_mail_id"),
    )
    op.create_index(
        "ix_bot_mail_forwards_status_due",
        "bot_mail_forwards",
        ["status", "due_at"],
        unique=False,
    )


def downgrade() -> None:
    op.drop_index("ix_bot_mail_forwards_status_due", table_name="bot_mail_forwards")
    op.drop_table("bot_mail_forwards")
    # Batch mode: SQLite before 3.35 cannot drop a column in place.
    with op.batch_alter_table("cabinets") as batch:
        batch.drop_column("forward_bot_mail")
