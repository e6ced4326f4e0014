"""Alembic environment: runs on the connection db.migrate hands over (or on sqlalchemy.url for the alembic CLI)."""

from alembic import context
from sqlalchemy import create_engine

from db.models import Base

config = context.config
target_metadata = Base.metadata


def run() -> None:
    conn = config.attributes.get("connection")
    if conn is None:
        engine = create_engine(config.get_main_option("sqlalchemy.url"))
        with engine.begin() as conn:
            _migrate(conn)
    else:
        _migrate(conn)


def _migrate(conn) -> None:  # type: ignore[no-untyped-def]
    # render_as_batch: SQLite cannot ALTER most things, so later migrations rebuild tables in batch mode.
    context.configure(connection=conn, target_metadata=target_metadata, render_as_batch=True, compare_type=True)
    with context.begin_transaction():
        context.run_migrations()


run()
