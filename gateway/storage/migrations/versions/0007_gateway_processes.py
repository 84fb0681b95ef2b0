"""gateway processes: a registry of every node's processes and their heartbeats, for
takeover of a dead process's claims within a minute and for `gateway status`

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-30 01:30:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "gateway_processes",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("node", sa.String(length=64), nullable=False),
        sa.Column("role", sa.String(length=16), nullable=False),
        sa.Column("pid", sa.Integer(), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("heartbeat_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("stopped_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("name"),
    )
    op.create_index("ix_gateway_processes_node", "gateway_processes", ["node"])


def downgrade() -> None:
    op.drop_index("ix_gateway_processes_node", table_name="gateway_processes")
    op.drop_table("gateway_processes")
