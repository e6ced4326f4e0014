"""Schema migrations (Alembic), applied automatically whenever the engine, the app or the CLI opens the store."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from alembic import command
from alembic.config import Config

if TYPE_CHECKING:
    from db.session import Store

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
# Any fixed 64-bit key, the same in every process of the studio.
MIGRATION_LOCK = 0x5354_5544_494F  # "STUDIO"


def alembic_config(url: str) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def upgrade(store: "Store", revision: str = "head") -> None:
    cfg = alembic_config(store.url)
    # The write engine takes the lock up front, so two processes starting at once migrate one after the other.
    with store.write_engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            # PostgreSQL takes no lock up front: without this, engines started together (compose --scale) would
            # each create the tables and all but one fail. Held until commit; the next then finds the head.
            conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({MIGRATION_LOCK})")
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, revision)


def current_revision(store: "Store") -> str | None:
    from alembic.runtime.migration import MigrationContext

    with store.read_engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()
