"""Events (issue 13): the outbox written with each change it reports, and the deliveries of
those events to the configured webhooks, in order per company

Revision ID: 0014
Revises: 0013
Create Date: 2026-11-30 09:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None

EVENT_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "events",
        sa.Column("id", EVENT_ID, primary_key=True, autoincrement=True),
        sa.Column("type", sa.String(length=32), nullable=False),
        sa.Column("cabinet_id", sa.Integer(), sa.ForeignKey("cabinets.id"), nullable=True),
        sa.Column("company_id", sa.Integer(), sa.ForeignKey("companies.id"), nullable=True),
        sa.Column("subject_id", sa.BigInteger(), nullable=False),
        sa.Column("payload", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_events_cabinet_id_id", "events", ["cabinet_id", "id"])
    op.create_table(
        "webhook_deliveries",
        sa.Column("id", EVENT_ID, primary_key=True, autoincrement=True),
        sa.Column("webhook", sa.String(length=63), nullable=False),
        sa.Column("event_id", sa.BigInteger(), sa.ForeignKey("events.id"), nullable=False),
        sa.Column("ordering", sa.String(length=32), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("due_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("claimed_by", sa.String(length=128), nullable=True),
        sa.Column("lease_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("delivered_at", sa.DateTime(timezone=True), nullable=True),
        sa.UniqueConstraint("webhook", "event_id"),
        sa.CheckConstraint(
            "status IN ('queued', 'sending', 'delivered', 'deferred', 'failed')",
            name="ck_webhook_deliveries_status",
        ),
    )
    op.create_index(
        "ix_webhook_deliveries_order", "webhook_deliveries", ["webhook", "ordering", "event_id"]
    )
    op.create_index("ix_webhook_deliveries_status_due", "webhook_deliveries", ["status", "due_at"])
    op.create_table(
        "webhook_cursors",
        sa.Column("webhook", sa.String(length=63), primary_key=True),
        sa.Column("after", sa.BigInteger(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("webhook_cursors")
    op.drop_index("ix_webhook_deliveries_status_due", "webhook_deliveries")
    op.drop_index("ix_webhook_deliveries_order", "webhook_deliveries")
    op.drop_table("webhook_deliveries")
    op.drop_index("ix_events_cabinet_id_id", "events")
    op.drop_table("events")
