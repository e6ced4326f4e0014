"""covering indexes for chart reads

Revision ID: 0002
Revises: 0001
"""
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_metric_points_series", "metric_points", ["run_id", "key", "step", "value"])
    op.create_index("ix_group_stats_series", "group_stats", ["run_id", "group", "step"])


def downgrade() -> None:
    op.drop_index("ix_group_stats_series", table_name="group_stats")
    op.drop_index("ix_metric_points_series", table_name="metric_points")
