"""Create the ``studies`` table and its ``received_at`` index.

Same columns as the hand-written SQLite schema of cxrtriage <= 0.1.0, so a
database made by that version is adopted by stamping this revision (see
:func:`cxrtriage.store.store.upgrade_database`).

Revision ID: 0001
Revises:
Create Date: 2026-11-28
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Create ``studies`` (unique ``(sha256, model_version)``) and index ``studies_received``."""
    json = sa.JSON(none_as_null=True)
    op.create_table(
        "studies",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("received_at", sa.String(40), nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("source_format", sa.String(16), nullable=False),
        sa.Column("image_file", sa.Text(), nullable=False),
        sa.Column("width", sa.Integer(), nullable=False),
        sa.Column("height", sa.Integer(), nullable=False),
        sa.Column("label", sa.Text(), nullable=False),
        sa.Column("probabilities", json, nullable=False),
        sa.Column("threshold", sa.Double(), nullable=True),
        sa.Column("positive_class", sa.Text(), nullable=True),
        sa.Column("triage", sa.String(32), nullable=False),
        sa.Column("model_name", sa.Text(), nullable=False),
        sa.Column("model_version", sa.String(200), nullable=False),
        sa.Column("backend", sa.String(32), nullable=False),
        sa.Column("heat_class", sa.Text(), nullable=True),
        sa.Column("cam", json, nullable=True),
        sa.Column("ood_score", sa.Double(), nullable=True),
        sa.Column("dicom_meta", json, nullable=True),
        sa.Column("report", json, nullable=False),
        sa.Column("report_status", sa.String(16), nullable=False),
        sa.Column("signed_by", sa.Text(), nullable=True),
        sa.Column("signed_at", sa.String(40), nullable=True),
        sa.Column("timings", json, nullable=False),
        sa.UniqueConstraint("sha256", "model_version", name="uq_studies_sha256_model_version"),
    )
    op.create_index("studies_received", "studies", ["received_at"])


def downgrade() -> None:
    """Drop the table and its index."""
    op.drop_index("studies_received", table_name="studies")
    op.drop_table("studies")
