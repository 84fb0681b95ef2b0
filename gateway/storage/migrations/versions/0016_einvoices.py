"""E-invoices (issue 15): companies' SIREN, SIRET and VAT number; what a document's e-invoice
says, and the key that files the same invoice once per company; why a duplicate is one

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-01 01:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("companies", sa.Column("siren", sa.String(length=9), nullable=True))
    op.add_column("companies", sa.Column("siret", sa.String(length=14), nullable=True))
    op.add_column("companies", sa.Column("vat_number", sa.String(length=20), nullable=True))
    op.add_column("documents", sa.Column("invoice", sa.JSON(), nullable=True))
    op.add_column("documents", sa.Column("invoice_key", sa.String(length=400), nullable=True))
    op.create_index(
        "ux_documents_company_invoice", "documents", ["company_id", "invoice_key"], unique=True
    )
    op.add_column("duplicate_documents", sa.Column("reason", sa.String(length=400), nullable=True))


def downgrade() -> None:
    op.drop_column("duplicate_documents", "reason")
    op.drop_index("ux_documents_company_invoice", table_name="documents")
    op.drop_column("documents", "invoice_key")
    op.drop_column("documents", "invoice")
    op.drop_column("companies", "vat_number")
    op.drop_column("companies", "siret")
    op.drop_column("companies", "siren")
