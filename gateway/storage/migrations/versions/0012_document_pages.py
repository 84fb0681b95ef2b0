"""Documents at scale (issue 13): indexes for keyset pages in (placed_at, id) order — a
company's, a folder subtree's (one folder at a time), everyone's; the folder index they
replace was its prefix

Revision ID: 0012
Revises: 0011
Create Date: 2026-11-30 09:00:00
"""

from __future__ import annotations

from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_documents_company_placed", "documents", ["company_id", "placed_at", "id"])
    op.create_index("ix_documents_folder_placed", "documents", ["folder_id", "placed_at", "id"])
    op.create_index("ix_documents_placed", "documents", ["placed_at", "id"])
    op.drop_index("ix_documents_folder_id", table_name="documents")


def downgrade() -> None:
    op.create_index("ix_documents_folder_id", "documents", ["folder_id"])
    op.drop_index("ix_documents_placed", table_name="documents")
    op.drop_index("ix_documents_folder_placed", table_name="documents")
    op.drop_index("ix_documents_company_placed", table_name="documents")
