"""run lease (owner token of the current claim) and run folder token

Revision ID: 0003
Revises: 0002
"""
import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Nullable columns only: SQLite adds them in place, no table rebuild. Existing runs keep a NULL folder
    # token and so their old runs/<id> folder.
    with op.batch_alter_table("runs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("lease", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("folder_token", sa.String(length=32), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("runs", schema=None) as batch_op:
        batch_op.drop_column("folder_token")
        batch_op.drop_column("lease")
