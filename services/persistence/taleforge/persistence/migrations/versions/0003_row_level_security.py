"""Row-level security: a player reads (and may change) only their own rows.

The same migration runs on Supabase and on plain Postgres:

- Supabase has `auth.uid()` and the roles `anon`, `authenticated` and `service_role`
  (BYPASSRLS); they are used as they are.
- Plain Postgres gets what is missing, and only that: the roles (NOLOGIN; created when no
  role of that name exists, so a cluster shared by several databases is fine), and a schema
  `auth` with a compatible `auth.uid()` reading the `sub` of the JWT claims set per
  transaction (`request.jwt.claims`, or the older `request.jwt.claim.sub`), as PostgREST and
  the API do.

`taleforge_admin` is the admin path: a role whose policies see and change every row. The
persistence service owns the tables (it ran this migration), and RLS does not apply to a
table's owner, so the writer is unaffected; so is `service_role`, which bypasses RLS.

A player may change the title of, or delete, their sessions and saves; every other player
table is read-only to them. Tables of the service's own bookkeeping (processed events, dead
letters) are closed to players altogether.

Downgrade drops the policies and grants and the compatibility `auth.uid()` (only if this
migration created it); roles are left in place: they belong to the cluster, not to one
database.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-28
"""

from __future__ import annotations

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

PLAYER_TABLES = ("story_sessions", "turns", "images", "saves", "usage_ledger")
PLAYER_WRITABLE = ("story_sessions", "saves")  # title and delete only
SERVICE_TABLES = ("processed_events", "dead_letters")
ALL_TABLES = ("scenarios", *PLAYER_TABLES, *SERVICE_TABLES)
MARK = "taleforge: Supabase-compatible stand-in; dropped by a downgrade of 0003"
OWN = "user_id = (SELECT auth.uid())"  # sub-select: evaluated once per query, not per row

CREATE_MISSING_ROLES = """
DO $$
DECLARE
  wanted text;
BEGIN
  FOREACH wanted IN ARRAY ARRAY['anon', 'authenticated', 'taleforge_admin'] LOOP
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = wanted) THEN
      BEGIN
        EXECUTE format('CREATE ROLE %I NOLOGIN NOINHERIT', wanted);
        -- Not a superuser? Then we may still need to be let in to SET ROLE to it.
        IF NOT (SELECT rolsuper FROM pg_roles WHERE rolname = current_user) THEN
          EXECUTE format('GRANT %I TO %I', wanted, current_user);
        END IF;
      EXCEPTION WHEN duplicate_object OR unique_violation THEN
        NULL;  -- another database of this cluster created it at the same moment
      END;
    END IF;
  END LOOP;
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'service_role') THEN
    BEGIN
      CREATE ROLE service_role NOLOGIN NOINHERIT BYPASSRLS;
    EXCEPTION
      WHEN duplicate_object OR unique_violation THEN NULL;
      WHEN insufficient_privilege THEN
        RAISE NOTICE 'service_role not created: BYPASSRLS needs a superuser';
    END;
  END IF;
END
$$
"""

CREATE_AUTH_UID = f"""
DO $$
BEGIN
  IF to_regnamespace('auth') IS NULL THEN
    CREATE SCHEMA auth;
    COMMENT ON SCHEMA auth IS '{MARK}';
  END IF;
  IF to_regprocedure('auth.uid()') IS NULL THEN
    CREATE FUNCTION auth.uid() RETURNS uuid
      LANGUAGE sql STABLE
      AS $fn$
        SELECT coalesce(
          nullif(current_setting('request.jwt.claim.sub', true), ''),
          (nullif(current_setting('request.jwt.claims', true), '')::jsonb ->> 'sub')
        )::uuid
      $fn$;
    COMMENT ON FUNCTION auth.uid() IS '{MARK}';
    GRANT USAGE ON SCHEMA auth TO anon, authenticated, taleforge_admin;
    GRANT EXECUTE ON FUNCTION auth.uid() TO anon, authenticated, taleforge_admin;
    IF EXISTS (SELECT FROM pg_roles WHERE rolname = 'service_role') THEN
      GRANT USAGE ON SCHEMA auth TO service_role;
    END IF;
  END IF;
END
$$
"""

DROP_AUTH_UID = f"""
DO $$
BEGIN
  IF obj_description(to_regprocedure('auth.uid()'), 'pg_proc') = '{MARK}' THEN
    DROP FUNCTION auth.uid();
  END IF;
  IF obj_description(to_regnamespace('auth'), 'pg_namespace') = '{MARK}' THEN
    BEGIN
      DROP SCHEMA auth;
    EXCEPTION WHEN dependent_objects_still_exist THEN
      RAISE NOTICE 'schema auth kept: it holds objects this migration did not create';
    END;
  END IF;
END
$$
"""

GRANT_SERVICE_ROLE = f"""
DO $$
BEGIN
  IF EXISTS (SELECT FROM pg_roles WHERE rolname = 'service_role') THEN
    GRANT USAGE ON SCHEMA public TO service_role;
    GRANT SELECT, INSERT, UPDATE, DELETE ON {", ".join(ALL_TABLES)} TO service_role;
    GRANT USAGE, SELECT ON SEQUENCE dead_letters_id_seq TO service_role;
  END IF;
END
$$
"""


def _policies() -> list[str]:
    statements = []
    for table in PLAYER_TABLES:
        statements.append(
            f"CREATE POLICY {table}_select_own ON {table} FOR SELECT TO authenticated USING ({OWN})"
        )
    for table in PLAYER_WRITABLE:
        statements += [
            f"CREATE POLICY {table}_update_own ON {table} FOR UPDATE TO authenticated "
            f"USING ({OWN}) WITH CHECK ({OWN})",
            f"CREATE POLICY {table}_delete_own ON {table} FOR DELETE TO authenticated "
            f"USING ({OWN})",
        ]
    statements.append(
        "CREATE POLICY scenarios_select_published ON scenarios FOR SELECT "
        "TO anon, authenticated USING (published)"
    )
    for table in ALL_TABLES:
        statements.append(
            f"CREATE POLICY {table}_admin_all ON {table} FOR ALL TO taleforge_admin "
            "USING (true) WITH CHECK (true)"
        )
    return statements


def _policy_names() -> list[tuple[str, str]]:
    names = [(table, f"{table}_select_own") for table in PLAYER_TABLES]
    for table in PLAYER_WRITABLE:
        names += [(table, f"{table}_update_own"), (table, f"{table}_delete_own")]
    names.append(("scenarios", "scenarios_select_published"))
    names += [(table, f"{table}_admin_all") for table in ALL_TABLES]
    return names


def upgrade() -> None:
    op.execute(CREATE_MISSING_ROLES)
    op.execute(CREATE_AUTH_UID)

    op.execute("GRANT USAGE ON SCHEMA public TO anon, authenticated, taleforge_admin")
    op.execute(f"GRANT SELECT ON {', '.join(PLAYER_TABLES)} TO authenticated")
    op.execute("GRANT SELECT ON scenarios TO anon, authenticated")
    for table in PLAYER_WRITABLE:
        op.execute(f"GRANT UPDATE (title), DELETE ON {table} TO authenticated")
    op.execute(
        f"GRANT SELECT, INSERT, UPDATE, DELETE ON {', '.join(ALL_TABLES)} TO taleforge_admin"
    )
    op.execute("GRANT USAGE, SELECT ON SEQUENCE dead_letters_id_seq TO taleforge_admin")
    op.execute(GRANT_SERVICE_ROLE)

    for table in ALL_TABLES:
        op.execute(f"ALTER TABLE {table} ENABLE ROW LEVEL SECURITY")
    for statement in _policies():
        op.execute(statement)


def downgrade() -> None:
    for table, name in _policy_names():
        op.execute(f"DROP POLICY IF EXISTS {name} ON {table}")
    for table in ALL_TABLES:
        op.execute(f"ALTER TABLE {table} DISABLE ROW LEVEL SECURITY")
    tables = ", ".join(ALL_TABLES)
    op.execute(f"REVOKE ALL ON {tables} FROM anon, authenticated, taleforge_admin")
    op.execute("REVOKE ALL ON SEQUENCE dead_letters_id_seq FROM taleforge_admin")
    op.execute(DROP_AUTH_UID)
