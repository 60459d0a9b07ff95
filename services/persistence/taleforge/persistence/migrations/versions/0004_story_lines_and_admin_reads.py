"""Story lines, deleted sessions, scenario and settings events, and a read-only admin role.

- `turns.in_story`: whether the turn is on the session's current story line. Loading a save
  (`session.restored`) takes the turns after the save's turn off the line; loading an
  older or newer save puts its own line back (the turns form a tree via `parent_turn_id`).
- `deleted_sessions`: one tombstone per deleted session. The session's rows are deleted
  (turns, images and saves by cascade); later events about it are recognised and ignored.
- `scenarios.snapshot`: the scenario's world, tone, rules and characters, as
  `scenario.upserted` carried them; the table becomes a projection of scenario events.
- `settings_changes`: every `settings.changed` (narrator and illustrator live settings).
- `dead_letters.retry_count`, `last_retried_at`, `retried_as_seq`: `dead_letter.retried`.
- Role `taleforge_admin_read` (NOLOGIN): SELECT on every table, with policies that let it
  read every row. The API's admin endpoints read as it; it can change nothing, and the
  player policies are untouched. Like 0003, the role is created only when missing, and the
  migrating login (when not a superuser) is granted it so it may SET ROLE to it.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-05
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB, UUID

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

ADMIN_READ = "taleforge_admin_read"
NEW_TABLES = ("deleted_sessions", "settings_changes")  # the service's own: no player access
# Every table of 0003 plus the new ones: the admin reader sees all of them.
TABLES = (
    "scenarios",
    "story_sessions",
    "turns",
    "images",
    "saves",
    "usage_ledger",
    "processed_events",
    "dead_letters",
    *NEW_TABLES,
)

CREATE_ADMIN_READ = f"""
DO $$
BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{ADMIN_READ}') THEN
    BEGIN
      CREATE ROLE {ADMIN_READ} NOLOGIN NOINHERIT;
      IF NOT (SELECT rolsuper FROM pg_roles WHERE rolname = current_user) THEN
        EXECUTE format('GRANT {ADMIN_READ} TO %I', current_user);
      END IF;
    EXCEPTION WHEN duplicate_object OR unique_violation THEN
      NULL;  -- another database of this cluster created it at the same moment
    END;
  END IF;
  IF to_regprocedure('auth.uid()') IS NOT NULL THEN
    GRANT USAGE ON SCHEMA auth TO {ADMIN_READ};
    GRANT EXECUTE ON FUNCTION auth.uid() TO {ADMIN_READ};
  END IF;
END
$$
"""

GRANT_SERVICE_ROLE = f"""
DO $$
BEGIN
  IF EXISTS (SELECT FROM pg_roles WHERE rolname = 'service_role') THEN
    GRANT SELECT, INSERT, UPDATE, DELETE ON {", ".join(NEW_TABLES)} TO service_role;
  END IF;
END
$$
"""


def upgrade() -> None:
    op.add_column(
        "turns",
        sa.Column("in_story", sa.Boolean(), nullable=False, server_default=sa.text("true")),
    )
    op.add_column(
        "scenarios",
        sa.Column("snapshot", JSONB(), nullable=False, server_default=sa.text("'{}'::jsonb")),
    )
    op.add_column(
        "dead_letters",
        sa.Column("retry_count", sa.Integer(), nullable=False, server_default=sa.text("0")),
    )
    op.add_column("dead_letters", sa.Column("last_retried_at", sa.DateTime(timezone=True)))
    op.add_column("dead_letters", sa.Column("retried_as_seq", sa.BigInteger()))
    op.create_table(
        "deleted_sessions",
        sa.Column("session_id", UUID(as_uuid=True), nullable=False),
        sa.Column("user_id", UUID(as_uuid=True), nullable=False),
        sa.Column("deleted_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("session_id", name="pk_deleted_sessions"),
    )
    op.create_table(
        "settings_changes",
        sa.Column("event_id", UUID(as_uuid=True), nullable=False),
        sa.Column("service", sa.Text(), nullable=False),
        sa.Column("changes", JSONB(), nullable=False),
        sa.Column("revision", sa.BigInteger()),
        sa.Column("changed_by", UUID(as_uuid=True), nullable=False),
        sa.Column("changed_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("event_id", name="pk_settings_changes"),
    )
    op.create_index(
        "ix_settings_changes_service_changed_at", "settings_changes", ["service", "changed_at"]
    )

    op.execute(CREATE_ADMIN_READ)
    op.execute(f"GRANT USAGE ON SCHEMA public TO {ADMIN_READ}")
    op.execute(f"GRANT SELECT ON {', '.join(TABLES)} TO {ADMIN_READ}")
    op.execute(
        f"GRANT SELECT, INSERT, UPDATE, DELETE ON {', '.join(NEW_TABLES)} TO taleforge_admin"
    )
    op.execute(GRANT_SERVICE_ROLE)
    for table in NEW_TABLES:
        op.execute(f"ALTER TABLE {table} ENABLE ROW LEVEL SECURITY")
        op.execute(
            f"CREATE POLICY {table}_admin_all ON {table} FOR ALL TO taleforge_admin "
            "USING (true) WITH CHECK (true)"
        )
    for table in TABLES:
        op.execute(
            f"CREATE POLICY {table}_admin_read ON {table} FOR SELECT TO {ADMIN_READ} USING (true)"
        )


def downgrade() -> None:
    for table in TABLES:
        op.execute(f"DROP POLICY IF EXISTS {table}_admin_read ON {table}")
    tables = ", ".join(t for t in TABLES if t not in NEW_TABLES)
    op.execute(f"REVOKE ALL ON {tables} FROM {ADMIN_READ}")
    op.execute(f"REVOKE USAGE ON SCHEMA public FROM {ADMIN_READ}")
    op.execute(
        f"""
        DO $$
        BEGIN
          IF to_regprocedure('auth.uid()') IS NOT NULL THEN
            REVOKE ALL ON FUNCTION auth.uid() FROM {ADMIN_READ};
            REVOKE USAGE ON SCHEMA auth FROM {ADMIN_READ};
          END IF;
        END
        $$
        """
    )
    op.drop_index("ix_settings_changes_service_changed_at", table_name="settings_changes")
    op.drop_table("settings_changes")
    op.drop_table("deleted_sessions")
    op.drop_column("dead_letters", "retried_as_seq")
    op.drop_column("dead_letters", "last_retried_at")
    op.drop_column("dead_letters", "retry_count")
    op.drop_column("scenarios", "snapshot")
    op.drop_column("turns", "in_story")
