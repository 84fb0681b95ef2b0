"""IMAP OAuth2 (issue 12): rotated refresh tokens kept encrypted, and how long an IMAP folder
has been failing (consecutive failures, since when, the provider's error code)

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-30 08:30:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "oauth_refresh_tokens",
        sa.Column("source", sa.String(length=63), nullable=False),
        sa.Column("sealed", sa.Text(), nullable=False),
        sa.Column("seed_sha256", sa.String(length=64), nullable=False),
        sa.Column("saved_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("source"),
    )
    with op.batch_alter_table("imap_checkpoints") as batch:
        batch.add_column(sa.Column("failures", sa.Integer(), nullable=False, server_default="0"))
        batch.add_column(sa.Column("failing_since", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("error_code", sa.String(length=64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("imap_checkpoints") as batch:
        batch.drop_column("error_code")
        batch.drop_column("failing_since")
        batch.drop_column("failures")
    op.drop_table("oauth_refresh_tokens")
