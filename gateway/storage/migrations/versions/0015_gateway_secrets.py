"""Shared secrets (issue 14): the VERP secret and the DKIM private keys kept in the database,
sealed with `[gateway] secrets_key_*`, so that nodes need no shared folder

Revision ID: 0015
Revises: 0014
Create Date: 2026-11-30 11:45:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "gateway_secrets",
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("sealed", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("name"),
    )


def downgrade() -> None:
    op.drop_table("gateway_secrets")
