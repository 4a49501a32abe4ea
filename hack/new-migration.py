"""Write a new Alembic migration for the metadata store from the models' changes.

Usage: python hack/new-migration.py REVISION "what changed"
Autogenerates against a scratch SQLite database brought to the current head first.
Update SCHEMA_REVISION in kstep/stores/metadata/models.py to REVISION afterwards.
"""

import sys
import tempfile

from alembic import command
from alembic.config import Config
from sqlalchemy import create_engine

from kstep.stores.metadata.schema import MIGRATIONS


def main() -> None:
    revision, message = sys.argv[1], sys.argv[2]
    with tempfile.TemporaryDirectory() as scratch:
        engine = create_engine(f"sqlite:///{scratch}/scratch.db")
        config = Config()
        config.set_main_option("script_location", MIGRATIONS)
        with engine.begin() as connection:
            config.attributes["connection"] = connection
            command.upgrade(config, "head")
            command.revision(config, message=message, autogenerate=True, rev_id=revision)


if __name__ == "__main__":
    main()
