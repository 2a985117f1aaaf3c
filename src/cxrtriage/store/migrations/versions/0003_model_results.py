"""One result per model: the ``model_results`` table; studies keep the image, the report and the combined triage.

Upgrade: create ``model_results``; give ``studies`` the columns ``model_set``
(key of the set of model versions), ``source`` and ``priority``; move each
existing study's per-model columns (label, probabilities, threshold,
positive_class, model_name, model_version, backend, heat_class, cam,
ood_score) into one ``model_results`` row (position 0, applicable), turn its
stored report into the multi-model form (``ai_results`` list) and drop the
moved columns; the uniqueness becomes ``(sha256, model_set)``. SQLite alters
tables in batch mode (table copy).

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-28
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_JSON = sa.JSON(none_as_null=True)

#: Class names meaning "nothing found" in the models made before this revision.
_NORMAL = ("NORMAL", "normal", "Normal", "no_finding")

_MOVED = (
    "label",
    "probabilities",
    "threshold",
    "positive_class",
    "model_name",
    "model_version",
    "backend",
    "heat_class",
    "cam",
    "ood_score",
)


def _moved_column(name: str) -> Any:
    kind: Any = {"probabilities": _JSON, "cam": _JSON, "threshold": sa.Double(), "ood_score": sa.Double()}
    return sa.column(name, kind.get(name, sa.String()))


def _model_set_key(versions: Sequence[str]) -> str:
    # frozen copy of cxrtriage.store.models.model_set_key at this revision (migrations never import app code)
    return hashlib.sha256("\n".join(sorted(set(versions))).encode()).hexdigest()[:16]


def _priority(probs: dict[str, float] | None, positive_class: str | None, triage: str) -> float:
    probs = probs or {}
    normal = [k for k in probs if k in _NORMAL]
    if normal:
        return float(min(1.0, max(0.0, 1.0 - sum(float(probs[k] or 0.0) for k in normal))))
    if positive_class and positive_class in probs:
        return float(probs[positive_class] or 0.0)
    return 1.0 if triage == "finding" else 0.0


def _report_v3(report: dict[str, Any] | None, row: Any) -> dict[str, Any] | None:
    """The stored report in the multi-model form (``ai_results``) of this revision."""
    if not isinstance(report, dict) or "ai_result" not in report:
        return report
    r = dict(report)
    ai = dict(r.pop("ai_result") or {})
    model = r.pop("model", None) or {}
    flag = ai.get("triage") == "finding"
    ai.update(
        model_name=model.get("name", row.model_name),
        model_version=model.get("version", row.model_version),
        task=r.get("task", ""),
        flag=flag,
        flag_text=r.get("flag"),
        applicable=True,
        population_warning=None,
        heatmap_url=r.get("heatmap_url"),
    )
    r["ai_results"] = [ai]
    r["flagged_by"] = [ai["model_name"]] if flag else []
    return r


def upgrade() -> None:
    """Create ``model_results``, move the per-model columns of ``studies`` into it, re-key the uniqueness."""
    op.create_table(
        "model_results",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("study_id", sa.String(32), sa.ForeignKey("studies.id", ondelete="CASCADE"), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("model_name", sa.Text(), nullable=False),
        sa.Column("model_version", sa.String(200), nullable=False),
        sa.Column("task", sa.String(64), nullable=False),
        sa.Column("backend", sa.String(32), nullable=False),
        sa.Column("label", sa.Text(), nullable=False),
        sa.Column("probabilities", _JSON, nullable=False),
        sa.Column("threshold", sa.Double(), nullable=True),
        sa.Column("positive_class", sa.Text(), nullable=True),
        sa.Column("flag", sa.Boolean(), nullable=False),
        sa.Column("priority", sa.Double(), nullable=False),
        sa.Column("applicable", sa.Boolean(), nullable=False),
        sa.Column("population_warning", sa.Text(), nullable=True),
        sa.Column("heat_class", sa.Text(), nullable=True),
        sa.Column("cam", _JSON, nullable=True),
        sa.Column("ood_score", sa.Double(), nullable=True),
    )
    op.create_index("ix_model_results_study_id", "model_results", ["study_id"])
    with op.batch_alter_table("studies") as batch:
        batch.add_column(sa.Column("model_set", sa.String(64), nullable=True))
        batch.add_column(sa.Column("source", sa.String(16), nullable=False, server_default="upload"))
        batch.add_column(sa.Column("priority", sa.Double(), nullable=False, server_default="0"))

    conn = op.get_bind()
    studies = sa.table(
        "studies",
        sa.column("id", sa.String),
        sa.column("triage", sa.String),
        sa.column("report", _JSON),
        sa.column("model_set", sa.String),
        sa.column("priority", sa.Double),
        *(_moved_column(c) for c in _MOVED),
    )
    results = sa.table(
        "model_results",
        *(
            sa.column(c, t)
            for c, t in (
                ("study_id", sa.String),
                ("position", sa.Integer),
                ("model_name", sa.Text),
                ("model_version", sa.String),
                ("task", sa.String),
                ("backend", sa.String),
                ("label", sa.Text),
                ("probabilities", _JSON),
                ("threshold", sa.Double),
                ("positive_class", sa.Text),
                ("flag", sa.Boolean),
                ("priority", sa.Double),
                ("applicable", sa.Boolean),
                ("population_warning", sa.Text),
                ("heat_class", sa.Text),
                ("cam", _JSON),
                ("ood_score", sa.Double),
            )
        ),
    )
    for row in conn.execute(sa.select(studies)).all():
        prio = _priority(row.probabilities, row.positive_class, row.triage)
        report = row.report if isinstance(row.report, dict) else {}
        conn.execute(
            results.insert().values(
                study_id=row.id,
                position=0,
                model_name=row.model_name,
                model_version=row.model_version,
                task=str(report.get("task") or ""),
                backend=row.backend,
                label=row.label,
                probabilities=row.probabilities,
                threshold=float(row.threshold) if row.threshold is not None else None,
                positive_class=row.positive_class,
                flag=row.triage == "finding",
                priority=prio,
                applicable=True,
                population_warning=None,
                heat_class=row.heat_class,
                cam=row.cam,
                ood_score=float(row.ood_score) if row.ood_score is not None else None,
            )
        )
        conn.execute(
            studies.update()
            .where(studies.c.id == row.id)
            .values(model_set=_model_set_key([row.model_version]), priority=prio, report=_report_v3(row.report, row))
        )

    # a studies table of cxrtriage <= 0.1.0 (adopted at 0001) has the same constraint without a name
    named = {u["name"] for u in sa.inspect(conn).get_unique_constraints("studies")}
    with op.batch_alter_table("studies") as batch:
        if "uq_studies_sha256_model_version" in named:
            batch.drop_constraint("uq_studies_sha256_model_version", type_="unique")
        for c in _MOVED:
            batch.drop_column(c)
        batch.alter_column("model_set", existing_type=sa.String(64), nullable=False)
        batch.create_unique_constraint("uq_studies_sha256_model_set", ["sha256", "model_set"])
    op.create_index("studies_priority", "studies", ["priority"])


def downgrade() -> None:
    """Put the first model's result back into ``studies`` (other results are lost) and drop ``model_results``."""
    op.drop_index("studies_priority", table_name="studies")
    with op.batch_alter_table("studies") as batch:
        batch.drop_constraint("uq_studies_sha256_model_set", type_="unique")
        batch.add_column(sa.Column("label", sa.Text(), nullable=False, server_default=""))
        batch.add_column(sa.Column("probabilities", _JSON, nullable=False, server_default="{}"))
        batch.add_column(sa.Column("threshold", sa.Double(), nullable=True))
        batch.add_column(sa.Column("positive_class", sa.Text(), nullable=True))
        batch.add_column(sa.Column("model_name", sa.Text(), nullable=False, server_default=""))
        batch.add_column(sa.Column("model_version", sa.String(200), nullable=False, server_default=""))
        batch.add_column(sa.Column("backend", sa.String(32), nullable=False, server_default=""))
        batch.add_column(sa.Column("heat_class", sa.Text(), nullable=True))
        batch.add_column(sa.Column("cam", _JSON, nullable=True))
        batch.add_column(sa.Column("ood_score", sa.Double(), nullable=True))
    conn = op.get_bind()
    first = sa.text(
        "SELECT study_id, label, probabilities, threshold, positive_class, model_name, model_version, backend, "
        "heat_class, cam, ood_score FROM model_results WHERE position = 0"
    ).columns(probabilities=_JSON, cam=_JSON)
    studies = sa.table("studies", sa.column("id", sa.String), *(_moved_column(c) for c in _MOVED))
    for row in conn.execute(first).all():
        conn.execute(
            studies.update()
            .where(studies.c.id == row.study_id)
            .values(**{c: getattr(row, c) for c in _MOVED})
        )
    with op.batch_alter_table("studies") as batch:
        batch.drop_column("priority")
        batch.drop_column("source")
        batch.drop_column("model_set")
        batch.create_unique_constraint("uq_studies_sha256_model_version", ["sha256", "model_version"])
    op.drop_index("ix_model_results_study_id", table_name="model_results")
    op.drop_table("model_results")
