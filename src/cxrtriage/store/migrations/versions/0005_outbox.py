"""Create the ``outbox`` table: DICOM results (SR, heatmap Secondary Capture) waiting to be sent to a PACS.

Revision ID: 0005_outbox
Revises: 0003
Create Date: 2026-11-28
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Create ``outbox`` (unique per object and destination; indexed by status and due time)."""
    op.create_table(
        "outbox",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("created_at", sa.String(40), nullable=False),
        sa.Column("study_id", sa.String(32), nullable=True),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("destination", sa.String(200), nullable=False),
        sa.Column("sop_class_uid", sa.String(64), nullable=False),
        sa.Column("sop_instance_uid", sa.String(64), nullable=False),
        sa.Column("dataset", sa.LargeBinary(), nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", sa.Double(), nullable=False),
        sa.Column("claimed_until", sa.Double(), nullable=True),
        sa.Column("last_error", sa.String(200), nullable=True),
        sa.Column("sent_at", sa.String(40), nullable=True),
        sa.UniqueConstraint("sop_instance_uid", "destination", name="uq_outbox_instance_destination"),
    )
    op.create_index("outbox_due", "outbox", ["status", "next_attempt_at"])


def downgrade() -> None:
    """Drop ``outbox``."""
    op.drop_index("outbox_due", table_name="outbox")
    op.drop_table("outbox")
