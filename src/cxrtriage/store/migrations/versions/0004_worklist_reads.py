"""Worklist and reads: study status, the reader's label, original pixels, report versions, notification outbox.

Adds to ``studies`` the worklist status, the reader's call (reference label, agreement), the first
signature time, the original 16-bit pixels' file and the worklist sort key (indexed); creates
``report_versions`` (a signed report is never overwritten) and ``notifications`` (critical-finding
outbox). Existing studies get their status from the report (signed -> ``signed``, else ``unread``),
their first signature and a version-1 row from the signed report, and their sort key.

Revision ID: 0004_worklist
Revises: 0003
Create Date: 2026-11-28
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Add the columns and tables, then fill them for existing studies."""
    from cxrtriage.store.reads import worklist_key

    json = sa.JSON(none_as_null=True)
    with op.batch_alter_table("studies") as batch:
        batch.add_column(sa.Column("read_status", sa.String(16), nullable=False, server_default="unread"))
        batch.add_column(sa.Column("reference_label", sa.Text(), nullable=True))
        batch.add_column(sa.Column("reader_finding", sa.Boolean(), nullable=True))
        batch.add_column(sa.Column("reader_agrees", sa.Boolean(), nullable=True))
        batch.add_column(sa.Column("first_signed_at", sa.String(40), nullable=True))
        batch.add_column(sa.Column("original_file", sa.Text(), nullable=True))
        batch.add_column(sa.Column("original_offset", sa.Double(), nullable=True))
        batch.add_column(sa.Column("worklist_key", sa.String(120), nullable=False, server_default=""))
    op.create_index("studies_worklist", "studies", ["worklist_key"])
    op.create_index("studies_status_triage", "studies", ["read_status", "triage"])
    op.create_table(
        "report_versions",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("study_id", sa.String(32), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("report", json, nullable=False),
        sa.Column("reader_label", sa.Text(), nullable=True),
        sa.Column("reader_finding", sa.Boolean(), nullable=True),
        sa.Column("reader_agrees", sa.Boolean(), nullable=True),
        sa.Column("ai_label", sa.Text(), nullable=False),
        sa.Column("username", sa.String(64), nullable=False),
        sa.Column("signed_by", sa.Text(), nullable=False),
        sa.Column("signed_at", sa.String(40), nullable=False),
        sa.UniqueConstraint("study_id", "version", name="uq_report_versions_study_version"),
    )
    op.create_index("report_versions_signed", "report_versions", ["signed_at"])
    op.create_table(
        "notifications",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("key", sa.String(80), nullable=False),
        sa.Column("study_id", sa.String(32), nullable=False),
        sa.Column("channel", sa.String(16), nullable=False),
        sa.Column("payload", json, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", sa.Double(), nullable=False),
        sa.Column("created_at", sa.String(40), nullable=False),
        sa.Column("delivered_at", sa.String(40), nullable=True),
        sa.Column("last_error", sa.String(200), nullable=True),
        sa.UniqueConstraint("key", name="uq_notifications_key"),
    )
    op.create_index("notifications_due", "notifications", ["status", "next_attempt_at"])

    # existing studies: status, first signature, version 1 of signed reports, sort key
    conn = op.get_bind()
    studies = sa.table(
        "studies",
        sa.column("id", sa.String),
        sa.column("received_at", sa.String),
        sa.column("triage", sa.String),
        sa.column("report", json),
        sa.column("report_status", sa.String),
        sa.column("signed_by", sa.Text),
        sa.column("signed_at", sa.String),
        sa.column("read_status", sa.String),
        sa.column("first_signed_at", sa.String),
        sa.column("worklist_key", sa.String),
        sa.column("priority", sa.Double),
    )
    versions = sa.table(
        "report_versions",
        sa.column("study_id", sa.String),
        sa.column("version", sa.Integer),
        sa.column("kind", sa.String),
        sa.column("report", json),
        sa.column("ai_label", sa.Text),
        sa.column("username", sa.String),
        sa.column("signed_by", sa.Text),
        sa.column("signed_at", sa.String),
    )
    for row in conn.execute(sa.select(studies)).mappings().all():
        signed = row["report_status"] == "signed"
        status = "signed" if signed else "unread"
        prio = row["priority"]
        flagged = row["triage"] == "finding"
        conn.execute(
            studies.update()
            .where(studies.c.id == row["id"])
            .values(
                read_status=status,
                first_signed_at=row["signed_at"] if signed else None,
                worklist_key=worklist_key(status, flagged, prio, row["received_at"], row["id"]),
            )
        )
        if signed:
            conn.execute(
                versions.insert().values(
                    study_id=row["id"],
                    version=1,
                    kind="sign",
                    report=row["report"],
                    ai_label=row["triage"],
                    username=str(row["signed_by"] or "")[:64],
                    signed_by=row["signed_by"] or "",
                    signed_at=row["signed_at"] or row["received_at"],
                )
            )


def downgrade() -> None:
    """Drop the tables, the index and the columns."""
    op.drop_index("notifications_due", table_name="notifications")
    op.drop_table("notifications")
    op.drop_index("report_versions_signed", table_name="report_versions")
    op.drop_table("report_versions")
    op.drop_index("studies_status_triage", table_name="studies")
    op.drop_index("studies_worklist", table_name="studies")
    with op.batch_alter_table("studies") as batch:
        for name in (
            "worklist_key",
            "original_offset",
            "original_file",
            "first_signed_at",
            "reader_agrees",
            "reader_finding",
            "reference_label",
            "read_status",
        ):
            batch.drop_column(name)
