"""sender policies: a cabinet's or a company's own sender policy and allow list (issue 11)

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-30 05:30:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

# As written here, not imported: a migration keeps meaning what it meant when it was written.
_KINDS = ("open", "authenticated", "allow-list", "allow-list+authenticated")


def upgrade() -> None:
    kinds = ", ".join(f"'{k}'" for k in _KINDS)
    op.create_table(
        "sender_policies",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("cabinet_id", sa.Integer(), nullable=True),
        sa.Column("company_id", sa.Integer(), nullable=True),
        sa.Column("kind", sa.String(length=32), nullable=True),
        sa.Column("allowed", sa.JSON(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "(cabinet_id IS NULL) <> (company_id IS NULL)", name="ck_sender_policies_level"
        ),
        sa.CheckConstraint(f"kind IN ({kinds})", name="ck_sender_policies_kind"),
        sa.ForeignKeyConstraint(["cabinet_id"], ["cabinets.id"]),
        sa.ForeignKeyConstraint(["company_id"], ["companies.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("cabinet_id"),
        sa.UniqueConstraint("company_id"),
    )


def downgrade() -> None:
    op.drop_table("sender_policies")
