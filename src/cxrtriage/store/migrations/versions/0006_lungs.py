"""Lung segmentation per study and the heatmap's share inside the lungs per model result.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-06
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Add ``studies.lungs`` (JSON, nullable) and ``model_results.cam_in_lungs`` (double, nullable)."""
    with op.batch_alter_table("studies") as batch:
        batch.add_column(sa.Column("lungs", sa.JSON(none_as_null=True), nullable=True))
    with op.batch_alter_table("model_results") as batch:
        batch.add_column(sa.Column("cam_in_lungs", sa.Double(), nullable=True))


def downgrade() -> None:
    """Drop both columns."""
    with op.batch_alter_table("model_results") as batch:
        batch.drop_column("cam_in_lungs")
    with op.batch_alter_table("studies") as batch:
        batch.drop_column("lungs")
