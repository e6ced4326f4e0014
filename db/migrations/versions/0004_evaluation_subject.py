"""what an evaluation evaluated: base model id, run, checkpoint step, loaded folder, who ran it

Revision ID: 0004
Revises: 0003
"""
import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Nullable columns only: SQLite adds them in place, no table rebuild. Rows from before keep NULLs and are
    # still shown (the app infers what it can from model / checkpoint / step).
    with op.batch_alter_table("evaluations", schema=None) as batch_op:
        batch_op.add_column(sa.Column("evaluated_model", sa.Text(), nullable=True))
        batch_op.add_column(sa.Column("evaluated_run_id", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("evaluated_step", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("model_path", sa.Text(), nullable=True))
        batch_op.add_column(sa.Column("source", sa.String(length=16), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("evaluations", schema=None) as batch_op:
        batch_op.drop_column("source")
        batch_op.drop_column("model_path")
        batch_op.drop_column("evaluated_step")
        batch_op.drop_column("evaluated_run_id")
        batch_op.drop_column("evaluated_model")
