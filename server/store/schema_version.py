"""Whether the database's schema is already at the newest migration, without importing alembic.

Nearly every start finds the schema current; alembic (~12 MB resident once
imported, with mako) is then only needed to say so. Here that answer costs one
SELECT of `alembic_version` and a read of the migration files' `revision` /
`down_revision` lines; anything unexpected answers False and alembic decides.
"""

from __future__ import annotations

import functools
import re
from pathlib import Path

from sqlalchemy import Engine, inspect, text

VERSIONS_DIR = Path(__file__).parent / "migrations" / "versions"

_REVISION = re.compile(r'^revision(?:\s*:\s*[^=]+)?\s*=\s*["\']([^"\']+)["\']', re.MULTILINE)
_DOWN_REVISION = re.compile(r'^down_revision(?:\s*:\s*[^=]+)?\s*=\s*(?:["\']([^"\']+)["\']|None)', re.MULTILINE)


@functools.lru_cache(maxsize=1)
def head_revision(versions_dir: Path = VERSIONS_DIR) -> str | None:
    """The one revision no other migration revises; None when the files do not say plainly (alembic decides)."""
    revisions: set[str] = set()
    revised: set[str] = set()
    for path in versions_dir.glob("*.py"):
        source = path.read_text(encoding="utf-8")
        revision, down = _REVISION.search(source), _DOWN_REVISION.search(source)
        if revision is None or down is None:
            return None
        revisions.add(revision.group(1))
        if down.group(1) is not None:
            revised.add(down.group(1))
    heads = revisions - revised
    return next(iter(heads)) if len(heads) == 1 else None


def schema_is_current(engine: Engine) -> bool:
    """True when the database records exactly the newest migration (an empty database: False)."""
    head = head_revision()
    if head is None:
        return False
    with engine.connect() as conn:
        if not inspect(conn).has_table("alembic_version"):
            return False
        versions = conn.execute(text("SELECT version_num FROM alembic_version")).scalars().all()
        conn.rollback()
    return versions == [head]
