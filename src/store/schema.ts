// Our own tables (batches, per-row results, the idempotency ledger) live in their own schema,
// created by an idempotent, versioned migration that workers and ingest run on start.
// Dify's tables are never altered.
import type { Db } from '../db/pool.js';
import { withTransaction } from '../db/pool.js';
import { lockMigration } from './locks.js';

export const SCHEMA = 'dify_provision';

/** A new workspace's Dify rows (dify/workspace-writer.ts gives the parameters): our function create_workspace_v1. */
export const CREATE_WORKSPACE_CALL = `SELECT ${SCHEMA}.create_workspace_v1($1::uuid, $2::text, $3::text, $4::text, $5::uuid[],
  $6::text[], $7::boolean[], $8::text, $9::text[], $10::text[], $11::integer, $12::integer, $13::boolean)`;

const MIGRATIONS: string[] = [
  `
  CREATE TABLE ${SCHEMA}.batches (
    id                 text PRIMARY KEY,
    source             text,
    created_at         timestamptz NOT NULL DEFAULT now(),
    ingest_finished_at timestamptz,
    finished_at        timestamptz,
    cancelled_at       timestamptz,
    total_rows         integer NOT NULL DEFAULT 0,
    options            jsonb NOT NULL DEFAULT '{}'
  );
  CREATE TABLE ${SCHEMA}.rows (
    batch_id        text NOT NULL REFERENCES ${SCHEMA}.batches (id) ON DELETE CASCADE,
    line            integer NOT NULL,
    idempotency_key text,
    external_id     text,
    workspace_name  text,
    owner_email     text,
    tenant_id       uuid,
    outcome         text NOT NULL,
    attempts        integer NOT NULL DEFAULT 0,
    duration_ms     integer,
    fingerprint     text,
    error           text,
    -- What the job needs (the validated row, no secrets), so retry can queue it again.
    spec            jsonb,
    round           integer NOT NULL DEFAULT 1,
    created_accounts text[],
    updated_at      timestamptz NOT NULL DEFAULT now(),
    finished_at     timestamptz,
    PRIMARY KEY (batch_id, line)
  );
  CREATE INDEX rows_batch_outcome_idx ON ${SCHEMA}.rows (batch_id, outcome);
  CREATE TABLE ${SCHEMA}.ledger (
    idempotency_key text PRIMARY KEY,
    tenant_id       uuid NOT NULL UNIQUE,
    batch_id        text NOT NULL,
    line            integer NOT NULL,
    fingerprint     text NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now()
  );
  `,
  `
  -- API keys minted with a workspace: only the masked form and the token sealed to the
  -- operator's public key are kept; the seal is dropped once revealed.
  ALTER TABLE ${SCHEMA}.rows ADD COLUMN api_key_masked text;
  CREATE TABLE ${SCHEMA}.sealed_secrets (
    api_token_id uuid PRIMARY KEY,
    batch_id     text REFERENCES ${SCHEMA}.batches (id) ON DELETE CASCADE,
    line         integer,
    tenant_id    uuid NOT NULL,
    masked       text NOT NULL,
    jwe          text,
    created_at   timestamptz NOT NULL DEFAULT now(),
    revealed_at  timestamptz
  );
  CREATE INDEX sealed_secrets_batch_idx ON ${SCHEMA}.sealed_secrets (batch_id);
  `,
  `
  -- Which Dify database this is: its queue's name derives from the id, so workers of another
  -- Dify sharing the Redis never see its jobs. Where it was minted tells a copy from the original.
  CREATE TABLE ${SCHEMA}.instance (
    id                uuid PRIMARY KEY,
    database_name     text NOT NULL,
    system_identifier text,
    created_at        timestamptz NOT NULL DEFAULT now()
  );
  `,
  `
  -- Open rows in batch and line order: what the lost-job sweep pages through.
  CREATE INDEX rows_open_idx ON ${SCHEMA}.rows (batch_id, line) WHERE outcome IN ('queued', 'active');
  -- Names and emails are keyed in Unicode NFC now: a key recorded from an NFD name (a macOS
  -- export) is rewritten so that its workspace is found again, unless its NFC form is known.
  DO $$ BEGIN
    IF current_setting('server_encoding') = 'UTF8' THEN
      UPDATE ${SCHEMA}.ledger l SET idempotency_key = n.nfc
        FROM (SELECT DISTINCT ON (normalize(idempotency_key, NFC)) idempotency_key AS old, normalize(idempotency_key, NFC) AS nfc
                FROM ${SCHEMA}.ledger WHERE idempotency_key IS NOT NFC NORMALIZED
               ORDER BY normalize(idempotency_key, NFC), created_at) n
       WHERE l.idempotency_key = n.old
         AND NOT EXISTS (SELECT 1 FROM ${SCHEMA}.ledger o WHERE o.idempotency_key = n.nfc);
    END IF;
  END $$;
  `,
  `
  -- Which running server a row was queued on (store/server.ts). The lineage lives in an UNLOGGED
  -- table: it survives a clean restart, and is emptied by crash recovery and left out of every
  -- physical copy (pg_basebackup, a copied volume or snapshot of a running server), so a copy
  -- gets a lineage of its own. A process that saw one lineage replaced by another on its own
  -- connection (a crash restart, a failover) records the succession here.
  CREATE UNLOGGED TABLE ${SCHEMA}.server (
    one     boolean PRIMARY KEY DEFAULT true CHECK (one),
    lineage uuid NOT NULL,
    since   timestamptz NOT NULL DEFAULT now()
  );
  CREATE TABLE ${SCHEMA}.lineage (
    lineage     uuid NOT NULL,
    predecessor uuid NOT NULL,
    recorded_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (lineage, predecessor)
  );
  `,
  `
  -- Invitations we issued in Dify's Redis (--invite, invite --resend). The link is kept only
  -- sealed to the operator's key (dropped once revealed). The token is kept in the clear only
  -- between the commit that records it and its SETEX in Dify's Redis (the outbox a crash or a
  -- Redis outage leaves for the sweep to complete); then it is cleared.
  CREATE TABLE ${SCHEMA}.invitations (
    id            uuid PRIMARY KEY,
    batch_id      text NOT NULL REFERENCES ${SCHEMA}.batches (id) ON DELETE CASCADE,
    line          integer NOT NULL,
    tenant_id     uuid NOT NULL,
    account_id    uuid NOT NULL,
    email         text NOT NULL,
    role          text NOT NULL,
    requires_setup boolean NOT NULL,
    pending_token text,
    -- a resend: every other token of this person in this workspace is deleted with the SETEX
    revoke_others boolean NOT NULL DEFAULT false,
    -- mail the link once stored (--send-invites)
    send          boolean NOT NULL DEFAULT false,
    jwe           text,
    ttl_seconds   integer NOT NULL,
    issued_at     timestamptz NOT NULL DEFAULT now(),
    stored_at     timestamptz,
    revealed_at   timestamptz,
    superseded_at timestamptz
  );
  CREATE INDEX invitations_batch_idx ON ${SCHEMA}.invitations (batch_id, line);
  CREATE INDEX invitations_pending_idx ON ${SCHEMA}.invitations (issued_at) WHERE pending_token IS NOT NULL;
  `,
  `
  -- What became of an invitation's mail (--send-invites): sent at, or why it was not (never the
  -- link, never a credential). Neither yet: not sent so far.
  ALTER TABLE ${SCHEMA}.invitations ADD COLUMN mailed_at timestamptz, ADD COLUMN mail_error text;
  `,
  `
  -- Change batches (apply): a batch is 'provision' (ingest) or 'changes' (apply); a change row
  -- says its action (add_member, remove_member, …), NULL on a provision row.
  ALTER TABLE ${SCHEMA}.batches ADD COLUMN kind text NOT NULL DEFAULT 'provision';
  ALTER TABLE ${SCHEMA}.rows ADD COLUMN action text;
  `,
  `
  -- Every server lineage this database has had (store/server.ts), in a LOGGED table: a physical
  -- copy carries the lineages its original had, never the one it mints itself, so of two live
  -- servers of one identity the copy is the one whose database had the other's lineage first.
  CREATE TABLE ${SCHEMA}.lineage_began (
    lineage uuid PRIMARY KEY,
    since   timestamptz NOT NULL
  );
  `,
  `
  -- Celery tasks Dify itself queues after create_tenant (its default-plugin task), recorded in the
  -- workspace's own transaction and queued on Dify's broker after the COMMIT (queued_at): the
  -- outbox a crash or a broker outage leaves for the sweep. The id is the Celery task id.
  CREATE TABLE ${SCHEMA}.dify_tasks (
    id          uuid PRIMARY KEY,
    batch_id    text NOT NULL REFERENCES ${SCHEMA}.batches (id) ON DELETE CASCADE,
    line        integer NOT NULL,
    tenant_id   uuid NOT NULL,
    name        text NOT NULL,
    queue       text NOT NULL,
    args        jsonb NOT NULL,
    recorded_at timestamptz NOT NULL DEFAULT now(),
    queued_at   timestamptz
  );
  CREATE INDEX dify_tasks_row_idx ON ${SCHEMA}.dify_tasks (batch_id, line);
  CREATE INDEX dify_tasks_pending_idx ON ${SCHEMA}.dify_tasks (recorded_at) WHERE queued_at IS NULL;
  `,
  `
  -- A link goes only with the person's own workspace (docs/security.md). mail_only: issued for
  -- someone who is in other workspaces too, mailed to them and never revealed. withdrawn: why a
  -- link was revoked (the person joined another workspace); revoke_pending: its tokens are still
  -- to be deleted from Dify's Redis (a worker does it after the commit, or the sweep).
  -- invite_note: who a row did not invite, and why.
  ALTER TABLE ${SCHEMA}.invitations ADD COLUMN mail_only boolean NOT NULL DEFAULT false, ADD COLUMN withdrawn text,
    ADD COLUMN revoke_pending boolean NOT NULL DEFAULT false;
  CREATE INDEX invitations_account_idx ON ${SCHEMA}.invitations (account_id) WHERE superseded_at IS NULL;
  CREATE INDEX invitations_revoke_idx ON ${SCHEMA}.invitations (superseded_at) WHERE revoke_pending;
  ALTER TABLE ${SCHEMA}.rows ADD COLUMN invite_note text;
  `,
  `
  -- A person removed from a workspace (apply's remove_member) whose invitation tokens for it the
  -- removal could not delete from Dify's Redis itself (the worker has no Dify Redis, or it did not
  -- answer): recorded in the removal's transaction, deleted by the sweep of a worker that has it
  -- (done_at). Tokens are found by the pair their value names: ours and Dify's console's alike.
  CREATE TABLE ${SCHEMA}.revocations (
    id          bigserial PRIMARY KEY,
    batch_id    text NOT NULL,
    line        integer NOT NULL,
    tenant_id   uuid NOT NULL,
    account_id  uuid NOT NULL,
    recorded_at timestamptz NOT NULL DEFAULT now(),
    done_at     timestamptz
  );
  CREATE INDEX revocations_due_idx ON ${SCHEMA}.revocations (recorded_at) WHERE done_at IS NULL;
  `,
  `
  -- The check a new workspace makes under its locks (ledger.ts checkLockedStatement), as a
  -- function so that each connection plans it once: planned afresh as a statement it cost ~0.25 ms
  -- of PostgreSQL's CPU a workspace, more than running it (BENCHMARKS.md, issue 34). A function of
  -- ours (volatile: its query takes its own snapshot, as the statement did); Dify's tables are read
  -- through the caller's search_path, as every other statement of ours reads them. Its columns
  -- are ledger.ts KNOWN_COLUMNS and the check's own; a change to them is a new function (_v2).
  CREATE FUNCTION ${SCHEMA}.check_locked_v1(p_key text, p_tenant uuid, p_accounts uuid[])
    RETURNS TABLE (tenant_id uuid, fingerprint text, known_batch text, known_line integer, known_owner text,
                   known_name text, known_alive boolean, current_name text, current_owner text,
                   tenant_taken boolean, locked integer)
    LANGUAGE plpgsql VOLATILE SET plan_cache_mode = force_generic_plan AS $check$
  #variable_conflict use_column
  BEGIN
    RETURN QUERY
    SELECT l.tenant_id, l.fingerprint, l.batch_id, l.line, k.owner_email, k.workspace_name,
           EXISTS (SELECT 1 FROM tenants t WHERE t.id = l.tenant_id),
           (SELECT t.name::text FROM tenants t WHERE t.id = l.tenant_id),
           (SELECT a.email::text FROM tenant_account_joins j JOIN accounts a ON a.id = j.account_id
             WHERE j.tenant_id = l.tenant_id AND j.role = 'owner' ORDER BY j.created_at LIMIT 1),
           EXISTS (SELECT 1 FROM tenants t WHERE t.id = p_tenant),
           (SELECT count(*)::integer FROM (SELECT a.id FROM accounts a WHERE a.id = ANY(p_accounts) ORDER BY a.id FOR UPDATE) AS mine)
      FROM (SELECT 1) AS one
      LEFT JOIN ${SCHEMA}.ledger l ON l.idempotency_key = p_key
      LEFT JOIN ${SCHEMA}.rows k ON k.batch_id = l.batch_id AND k.line = l.line;
  END
  $check$;
  `,
  `
  -- A job's start (rows.ts startAttempt) as a function, for the same reason: the statement with
  -- its known columns and account look-up cost ~0.5 ms of planning a workspace. Two forms: with
  -- Dify's accounts.normalized_email (newer releases) and without; a change is a new function.
  ${startAttemptFunction('start_attempt_v1', false)}
  ${startAttemptFunction('start_attempt_normalized_v1', true)}
  `,
  `
  -- The pre-claim guard (invitations.ts preclaimedStatement) looks up an account's links that
  -- were not only mailed, superseded ones included (a revealed link may have been used).
  CREATE INDEX invitations_account_links_idx ON ${SCHEMA}.invitations (account_id) WHERE NOT mail_only;
  `,
  `
  -- Two more statements of the hot paths as functions, planned once per connection (planned
  -- afresh they cost more PostgreSQL CPU than running them; BENCHMARKS.md, issue 34):
  -- the pre-claim guard (invitations.ts preclaimedStatement), run in every new workspace's
  -- transaction, and a row's answer (rows.ts answerStatement) with, for a created workspace, its
  -- ledger row (p_key), the last statement before COMMIT of every workspace and change.
  CREATE FUNCTION ${SCHEMA}.preclaimed_v1(p_accounts uuid[], p_tenant uuid, p_batch text)
    RETURNS TABLE (account_id uuid, email text)
    LANGUAGE plpgsql STABLE SET plan_cache_mode = force_generic_plan AS $preclaimed$
  #variable_conflict use_column
  BEGIN
    RETURN QUERY
    SELECT DISTINCT a.id, a.email::text FROM accounts a
      JOIN ${SCHEMA}.invitations i ON i.account_id = a.id
     WHERE a.id = ANY(p_accounts) AND a.status = 'active' AND NOT i.mail_only
       AND (i.revealed_at IS NOT NULL OR i.superseded_at IS NULL)
       AND i.tenant_id <> p_tenant AND i.batch_id <> p_batch
       AND NOT EXISTS (SELECT 1 FROM ${SCHEMA}.ledger l WHERE l.tenant_id = p_tenant AND l.batch_id = i.batch_id);
  END
  $preclaimed$;
  -- A row answered created/existing (applied/unchanged for a change) keeps that answer: a job run
  -- again after a crash (or a Redis restart that lost its completion) must not turn "created" into
  -- "existing" or "failed". Returns the rows updated (0 or 1).
  CREATE FUNCTION ${SCHEMA}.record_answer_v1(p_key text, p_batch text, p_line integer, p_outcome text, p_tenant uuid,
      p_fingerprint text, p_attempts integer, p_duration integer, p_error text, p_created_accounts text[],
      p_api_key_masked text, p_invite_note text)
    RETURNS integer
    LANGUAGE plpgsql VOLATILE SET plan_cache_mode = force_generic_plan AS $answer$
  DECLARE
    n integer;
  BEGIN
    IF p_key IS NOT NULL THEN
      INSERT INTO ${SCHEMA}.ledger (idempotency_key, tenant_id, batch_id, line, fingerprint)
        VALUES (p_key, p_tenant, p_batch, p_line, p_fingerprint);
    END IF;
    UPDATE ${SCHEMA}.rows r
       SET outcome = p_outcome, tenant_id = COALESCE(p_tenant, r.tenant_id), fingerprint = p_fingerprint,
           attempts = p_attempts, duration_ms = p_duration, error = p_error, created_accounts = p_created_accounts,
           api_key_masked = COALESCE(p_api_key_masked, r.api_key_masked), invite_note = COALESCE(p_invite_note, r.invite_note),
           updated_at = now(), finished_at = now()
     WHERE r.batch_id = p_batch AND r.line = p_line AND r.outcome NOT IN ('created', 'existing', 'applied', 'unchanged');
    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN n;
  END
  $answer$;
  -- Every row the connected Dify release's create_tenant writes for a new workspace, and the
  -- members' joins (dify/workspace-writer.ts says, per release band, which branches it takes:
  -- a branch not taken is never planned, so a table an older band lacks is never named). Dify's
  -- tables are read through the caller's search_path, as every statement of ours reads them.
  --   p_strategies: 'none', 'one-array' / 'one-json' (bands B–C: one row, fix_only at midnight,
  --   empty lists as varchar[] or json), 'per-category' (band D: a row per p_categories entry
  --   with its p_settings entry, at the tenant's p_slot); p_credits: the trial credit pool (NULL:
  --   none); p_last_opened: the join of an account Dify's invite creates is opened now (1.15+).
  CREATE FUNCTION ${SCHEMA}.create_workspace_v1(p_tenant uuid, p_name text, p_pem text, p_plan text,
      p_accounts uuid[], p_roles text[], p_invited boolean[], p_strategies text, p_categories text[],
      p_settings text[], p_slot integer, p_credits integer, p_last_opened boolean)
    RETURNS void
    LANGUAGE plpgsql VOLATILE SET plan_cache_mode = force_generic_plan AS $workspace$
  BEGIN
    INSERT INTO tenants (id, name, encrypt_public_key, plan, status) VALUES (p_tenant, p_name, p_pem, p_plan, 'normal');
    IF p_strategies = 'one-array' THEN
      INSERT INTO tenant_plugin_auto_upgrade_strategies
        (tenant_id, strategy_setting, upgrade_time_of_day, upgrade_mode, exclude_plugins, include_plugins)
      VALUES (p_tenant, 'fix_only', 0, 'exclude', '{}', '{}');
    ELSIF p_strategies = 'one-json' THEN
      INSERT INTO tenant_plugin_auto_upgrade_strategies
        (tenant_id, strategy_setting, upgrade_time_of_day, upgrade_mode, exclude_plugins, include_plugins)
      VALUES (p_tenant, 'fix_only', 0, 'exclude', '[]', '[]');
    ELSIF p_strategies = 'per-category' THEN
      INSERT INTO tenant_plugin_auto_upgrade_strategies
        (tenant_id, strategy_setting, upgrade_time_of_day, upgrade_mode, exclude_plugins, include_plugins, category)
      SELECT p_tenant, c.setting, p_slot, 'exclude', '[]', '[]', c.category
        FROM unnest(p_categories, p_settings) AS c (category, setting);
    ELSIF p_strategies <> 'none' THEN
      RAISE EXCEPTION 'create_workspace_v1: unknown strategies %', p_strategies;
    END IF;
    IF p_credits IS NOT NULL THEN
      INSERT INTO tenant_credit_pools (tenant_id, pool_type, quota_limit, quota_used) VALUES (p_tenant, 'trial', p_credits, 0);
    END IF;
    IF p_last_opened THEN
      INSERT INTO tenant_account_joins (tenant_id, account_id, role, current, last_opened_at)
      SELECT p_tenant, a.account_id, a.role, a.invited, CASE WHEN a.invited THEN now() AT TIME ZONE 'UTC' END
        FROM unnest(p_accounts, p_roles, p_invited) WITH ORDINALITY AS a (account_id, role, invited, n)
       ORDER BY a.n;
    ELSE
      INSERT INTO tenant_account_joins (tenant_id, account_id, role, current)
      SELECT p_tenant, a.account_id, a.role, a.invited
        FROM unnest(p_accounts, p_roles, p_invited) WITH ORDINALITY AS a (account_id, role, invited, n)
       ORDER BY a.n;
    END IF;
  END
  $workspace$;
  `,
  `
  -- What a rejected change row (apply) said that no other column keeps, as written (clipped): its
  -- action, workspace_id and role. Reports show it beside the row's error (a rejected ingest row
  -- keeps its raw name and owner in their own columns). Never a secret: a change row has none.
  ALTER TABLE ${SCHEMA}.rows ADD COLUMN input jsonb;
  `,
];

/** rows.ts startAttempt's statement as a function of ours (planned once per connection). */
function startAttemptFunction(name: string, normalized: boolean): string {
  return `
  CREATE FUNCTION ${SCHEMA}.${name}(p_batch text, p_line integer, p_attempt integer, p_key text, p_tenant uuid,
      p_spec jsonb, p_round integer, p_lineage text, p_chain text[], p_lowered text[]${normalized ? ', p_normalized text[]' : ''})
    RETURNS TABLE (matches boolean, ours boolean, recorded_key text, recorded_round integer, outcome text,
                   tenant_id uuid, fingerprint text, known_batch text, known_line integer, known_owner text,
                   known_name text, known_alive boolean, current_name text, current_owner text,
                   tenant_taken boolean, accounts json)
    LANGUAGE plpgsql VOLATILE SET plan_cache_mode = force_generic_plan AS $start$
  #variable_conflict use_column
  BEGIN
    RETURN QUERY
    WITH mine AS (
       SELECT r.outcome, r.idempotency_key, r.round, r.spec = p_spec AND r.round = p_round AS matches,
              p_lineage IS NULL OR ((NOT r.spec ? 'lineage' OR r.spec->>'lineage' = ANY(p_chain))
                                    AND EXISTS (SELECT 1 FROM ${SCHEMA}.server s WHERE s.lineage::text = p_lineage)) AS ours
         FROM ${SCHEMA}.rows r WHERE r.batch_id = p_batch AND r.line = p_line
     ), started AS (
       UPDATE ${SCHEMA}.rows r SET outcome = 'active', attempts = p_attempt, updated_at = now()
        WHERE r.batch_id = p_batch AND r.line = p_line AND r.outcome IN ('queued', 'active') AND r.spec = p_spec
          AND r.round = p_round AND (SELECT m.ours FROM mine m)
     )
     SELECT COALESCE((SELECT m.matches FROM mine m), false), COALESCE((SELECT m.ours FROM mine m), true),
            (SELECT m.idempotency_key FROM mine m), (SELECT m.round FROM mine m), (SELECT m.outcome FROM mine m),
            l.tenant_id, l.fingerprint, l.batch_id, l.line, k.owner_email, k.workspace_name,
            EXISTS (SELECT 1 FROM tenants t WHERE t.id = l.tenant_id),
            (SELECT t.name::text FROM tenants t WHERE t.id = l.tenant_id),
            (SELECT a.email::text FROM tenant_account_joins j JOIN accounts a ON a.id = j.account_id
              WHERE j.tenant_id = l.tenant_id AND j.role = 'owner' ORDER BY j.created_at LIMIT 1),
            EXISTS (SELECT 1 FROM tenants t WHERE t.id = p_tenant),
            (SELECT json_agg(json_build_object('id', a.id, 'email', a.email, 'status', a.status${normalized ? ", 'normalizedEmail', a.normalized_email" : ''}) ORDER BY a.created_at)
               FROM accounts a WHERE ${normalized ? '(lower(a.email) = ANY(p_lowered) OR a.normalized_email = ANY(p_normalized))' : 'lower(a.email) = ANY(p_lowered)'})
       FROM (SELECT 1) AS one
       LEFT JOIN ${SCHEMA}.ledger l ON l.idempotency_key = p_key
       LEFT JOIN ${SCHEMA}.rows k ON k.batch_id = l.batch_id AND k.line = l.line;
  END
  $start$;`;
}

export async function migrate(db: Db): Promise<void> {
  await withTransaction(db, async (tx) => {
    // Many workers may start at once: one migrates, the others wait and find it done.
    await lockMigration(tx);
    await tx.query(`CREATE SCHEMA IF NOT EXISTS ${SCHEMA}`);
    await tx.query(`CREATE TABLE IF NOT EXISTS ${SCHEMA}.schema_version (version integer NOT NULL)`);
    const { rows } = await tx.query<{ version: number }>(`SELECT max(version) AS version FROM ${SCHEMA}.schema_version`);
    const current = rows[0]?.version ?? 0;
    for (let v = current; v < MIGRATIONS.length; v++) {
      await tx.query(MIGRATIONS[v]!);
      await tx.query(`INSERT INTO ${SCHEMA}.schema_version (version) VALUES ($1)`, [v + 1]);
    }
  });
}
