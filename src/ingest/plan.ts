// A dry run against the database, like `terraform plan`: what ingesting these rows would do,
// read-only (no migration, no writes, no Redis).
import type { InputInfo } from '../input/decode.js';
import type { CsvRow } from '../input/read-rows.js';
import type { Db } from '../db/pool.js';
import { RowError } from '../common/errors.js';
import { randomUUID } from 'node:crypto';
import {
  candidatesAmong,
  checkDistinct,
  CREATE_MISSING_HINT,
  findAccounts,
  isNoAccount,
  personKey,
  pickAccount,
  profileOf,
  type AccountRules,
} from '../dify/accounts.js';
import { answerKnown, knownEntries } from '../store/ledger.js';
import { ledgerExists } from '../store/ledger.js';
import type { RejectedRow } from '../input/row-checker.js';
import { isLikelyDuplicate } from '../input/same-customer.js';
import { sameCustomerInDify } from '../store/owned-workspaces.js';
import {
  findPreclaimed,
  namedByAddresses,
  preclaimedForExisting,
  preclaimGuardInstalled,
  refuseExistingPreclaimed,
  refusePreclaimed,
  type NamedBy,
  type Preclaimed,
} from '../store/invitations.js';
import { loadSealKey, publicPemOf } from '../crypto/sealing.js';
import { generatedBatchId } from '../common/types.js';

export interface PlanLine {
  line: number;
  field: string;
  message: string;
}

/** What a row would get. */
export const PLAN_VERDICTS = ['would_create', 'existing', 'rejected', 'would_fail'] as const;
export type PlanVerdict = (typeof PLAN_VERDICTS)[number];

export interface PlanRow {
  line: number;
  workspaceName: string | null;
  ownerEmail: string | null;
  verdict: PlanVerdict;
  /** would_create: the accounts the row would create (--create-missing-owners), with the profile each gets. */
  newAccounts?: NewAccount[];
}

/** An account a row would create, with the profile Dify's register would give it. */
export interface NewAccount {
  email: string;
  name: string;
  language: string;
  timezone: string;
}

export interface Plan {
  total: number;
  wouldCreate: number;
  existing: number;
  rejected: number;
  /** Valid rows that would fail: missing or ambiguous owners/members, taken workspace ids, accounts the pre-claim guard refuses. */
  wouldFail: number;
  /** Rows that look like the same customer as another line or a workspace in Dify (in `rejected`, rejected by ingest). */
  likelyDuplicates: number;
  problems: PlanLine[];
  /** A file's format, encoding, delimiter and empty rows skipped. */
  input?: InputInfo;
  /** With `listRows`: the first rows read (that many at most), each with its verdict, in line order. */
  rows?: PlanRow[];
}

type Note = (line: number, row: { workspaceName?: string; ownerEmail?: string }, verdict: PlanVerdict, newAccounts?: NewAccount[]) => void;

export interface PlanBatchOptions {
  createMissingAccounts?: boolean;
  chunkSize?: number;
  allowDuplicateNames?: boolean;
  accounts: AccountRules;
  listRows?: number;
  /**
   * The batch the rows would be ingested into (as ingest derives it: a file's name and content, or
   * --batch-id): its own invitation links are no pre-claim. None: a new batch (stdin, the API's rows).
   */
  batchId?: string;
  /** --trust-account: addresses the pre-claim guard lets through (ignoring case). */
  trustAccounts?: readonly string[];
  /** --seal-to (a public PEM): the operator key a batch not recorded yet would be made with. */
  sealTo?: string;
}

/** What the worker's pre-claim guard (store/invitations.ts) needs to answer as it will. */
interface Guard {
  batchId: string;
  trusted: readonly string[] | undefined;
  sealTo: string | undefined;
}

export async function planBatch(rows: AsyncIterable<CsvRow>, db: Db, opts: PlanBatchOptions): Promise<Plan> {
  const plan: Plan = { total: 0, wouldCreate: 0, existing: 0, rejected: 0, wouldFail: 0, likelyDuplicates: 0, problems: [] };
  // The first `listRows` rows read: lines up to the last of them (valid rows get their verdict a chunk later).
  const listed = opts.listRows === undefined ? undefined : { rows: [] as PlanRow[], until: Infinity };
  const note: Note = (line, row, verdict, newAccounts) => {
    if (listed && line <= listed.until)
      listed.rows.push({
        line,
        workspaceName: row.workspaceName ?? null,
        ownerEmail: row.ownerEmail ?? null,
        verdict,
        ...(newAccounts?.length ? { newAccounts } : {}),
      });
  };
  let chunk: Extract<CsvRow, { ok: true }>[] = [];
  const ledger = opts.allowDuplicateNames ? undefined : await ledgerExists(db);
  // The pre-claim guard, as the workers will run it. A database not yet migrated to this release
  // lacks our function: planned without the guard (the workers migrate before their first row).
  const guard: Guard | undefined = (await preclaimGuardInstalled(db))
    ? {
        batchId: opts.batchId ?? generatedBatchId('plan'),
        trusted: opts.trustAccounts,
        // As ingest keeps it: the public half's PEM (a private key is refused as ingest refuses it).
        sealTo: opts.sealTo ? publicPemOf(loadSealKey(opts.sealTo)) : undefined,
      }
    : undefined;
  const flush = async () => {
    await planChunk(chunk, db, opts.createMissingAccounts ?? false, opts.accounts, plan, ledger, guard, note);
    chunk = [];
  };
  for await (const r of rows) {
    plan.total++;
    if (listed && plan.total === opts.listRows) listed.until = r.line;
    if (!r.ok) {
      note(r.line, r.raw, 'rejected');
      plan.rejected++;
      if (isLikelyDuplicate(r.errors)) plan.likelyDuplicates++;
      plan.problems.push(...r.errors.map((e) => ({ line: r.line, ...e })));
      continue;
    }
    chunk.push(r);
    if (chunk.length >= (opts.chunkSize ?? 1000)) await flush();
  }
  if (chunk.length > 0) await flush();
  plan.problems.sort((a, b) => a.line - b.line);
  if (listed) plan.rows = listed.rows.sort((a, b) => a.line - b.line);
  return plan;
}

async function planChunk(
  chunk: Extract<CsvRow, { ok: true }>[],
  db: Db,
  createMissing: boolean,
  rules: AccountRules,
  plan: Plan,
  ledger: boolean | undefined,
  guard: Guard | undefined,
  note: Note,
): Promise<void> {
  const keys = chunk.map((r) => r.row.key);
  const known = await knownEntries(db, keys);
  // As ingest will: a row like a workspace its owner has in Dify is rejected (unless allowed).
  const fresh = chunk.filter((r) => !known.has(r.row.key));
  const sameCustomer = ledger === undefined ? new Map() : await sameCustomerInDify(db, fresh, ledger);
  const duplicate = new Map([...sameCustomer].map(([i, rejected]) => [fresh[i]!.line, rejected as RejectedRow]));
  const emails = [...new Set(chunk.flatMap((r) => [r.row.ownerEmail, ...r.row.members.map((m) => m.email)]))];
  const accounts = await findAccounts(db, emails, rules);
  const ids = chunk.map((r) => r.row.workspaceId).filter((x): x is string => x !== undefined);
  const taken = new Set((await db.query<{ id: string }>(`SELECT id FROM tenants WHERE id = ANY($1::uuid[])`, [ids])).rows.map((r) => r.id));

  // Rows the worker's pre-claim guard will look at, answered once the guard's look-ups are done.
  const existing: { line: number; row: (typeof chunk)[number]['row']; accounts: typeof accounts }[] = [];
  const creating: {
    line: number;
    row: (typeof chunk)[number]['row'];
    problems: PlanLine[];
    created: NewAccount[];
    owner?: string;
    ids: string[];
    /** The row's addresses (owner first) and the account each resolved to (pickAccount). */
    addresses: { email: string; account: string }[];
  }[] = [];
  for (const { line, row } of chunk) {
    const problems: PlanLine[] = [];
    const entry = known.get(row.key);
    if (entry) {
      // The worker's own answer for a known key: existing, or a reused id / deleted workspace.
      try {
        answerKnown(row, entry);
      } catch (err) {
        if (!(err instanceof RowError)) throw err;
        plan.wouldFail++;
        note(line, row, 'would_fail');
        plan.problems.push({ line, field: err.field, message: err.message });
        continue;
      }
      // The row that made the workspace is this very row of this batch: ingesting it again queues nothing.
      if (guard && !(entry.batchId === guard.batchId && entry.line === line)) {
        const named = candidatesAmong(accounts, [row.ownerEmail, ...row.members.map((m) => m.email)], rules);
        existing.push({ line, row, accounts: named });
      } else {
        plan.existing++;
        note(line, row, 'existing');
      }
      continue;
    }
    const dup = duplicate.get(line);
    if (dup) {
      plan.rejected++;
      note(line, row, 'rejected');
      plan.likelyDuplicates++;
      plan.problems.push(...dup.errors.map((e) => ({ line, ...e })));
      continue;
    }
    // The worker's own rules (pickAccount), so the plan says what the run would do.
    const found: { email: string; account: string }[] = [];
    const created: NewAccount[] = [];
    let owner: string | undefined;
    const check = (email: string, field: string) => {
      try {
        const a = pickAccount(accounts, email, field, rules, createMissing);
        found.push({ email, account: 'missing' in a ? `new:${personKey(email, rules)}` : a.id });
        if ('missing' in a)
          created.push({
            email: email.toLowerCase(),
            ...profileOf(email.toLowerCase(), field === 'owner_email' ? (row.ownerProfile ?? {}) : {}),
          });
        else if (field === 'owner_email') owner = a.id;
      } catch (err) {
        if (!(err instanceof RowError)) throw err;
        // Before the ingest, as apply's plan: the option that would create the account.
        problems.push({ line, field, message: isNoAccount(err) ? `${err.message} ${CREATE_MISSING_HINT}` : err.message });
      }
    };
    check(row.ownerEmail, 'owner_email');
    for (const m of row.members) check(m.email, 'members');
    try {
      checkDistinct(found);
    } catch (err) {
      if (!(err instanceof RowError)) throw err;
      problems.push({ line, field: err.field, message: err.message });
    }
    if (row.workspaceId && taken.has(row.workspaceId))
      problems.push({ line, field: 'workspace_id', message: `a workspace with id ${row.workspaceId} exists already` });
    const existingIds = found.map((f) => f.account).filter((id) => !id.startsWith('new:'));
    creating.push({ line, row, problems, created, ...(owner ? { owner } : {}), ids: existingIds, addresses: found });
  }

  // The guard's look-ups, one per chunk: for the rows answered existing, and for the new
  // workspaces, one per workspace (a row's given workspace_id, else one fresh id for all: a new
  // workspace's answer depends on it only through links for it and its ledger entry, none yet).
  const ofExisting = new Map<string, Preclaimed>();
  const ofNew = new Map<string, Map<string, Preclaimed>>();
  const freshTenant = randomUUID();
  const tenantOf = (c: (typeof creating)[number]) => c.row.workspaceId ?? freshTenant;
  if (guard) {
    const named = unique(existing.flatMap((e) => e.accounts.map((a) => a.id)));
    for (const f of await preclaimedForExisting(db, named, guard.batchId, guard.sealTo)) ofExisting.set(f.account_id, f);
    for (const t of unique(creating.map(tenantOf))) {
      const ids = unique(creating.filter((c) => tenantOf(c) === t).flatMap((c) => c.ids));
      ofNew.set(t, new Map((await findPreclaimed(db, ids, t, guard.batchId)).map((f) => [f.account_id, f])));
    }
  }

  for (const { line, row, accounts: named } of existing) {
    // The worker's words (provision-workspace.ts existing): the field and the row's address for each account.
    const namedBy = namedByAddresses(named, [row.ownerEmail, ...row.members.map((m) => m.email)], rules);
    const found = foundOf(unique(named.map((a) => a.id)), ofExisting);
    try {
      refuseExistingPreclaimed(found, guard!.trusted, namedBy);
      plan.existing++;
      note(line, row, 'existing');
    } catch (err) {
      if (!(err instanceof RowError)) throw err;
      plan.wouldFail++;
      note(line, row, 'would_fail');
      plan.problems.push({ line, field: err.field, message: err.message });
    }
  }
  for (const { line, row, problems, created, owner, ids, addresses } of creating) {
    if (guard) {
      const found = foundOf(ids, ofNew.get(row.workspaceId ?? freshTenant)!);
      try {
        // As the worker names them: the field, and the row's addresses that resolved to the account.
        const namedBy = (id: string): NamedBy => ({
          field: id === owner ? 'owner_email' : 'members',
          emails: addresses.filter((a) => a.account === id).map((a) => a.email),
        });
        refusePreclaimed(found, guard.trusted, namedBy);
      } catch (err) {
        if (!(err instanceof RowError)) throw err;
        problems.push({ line, field: err.field, message: err.message });
      }
    }
    if (problems.length > 0) {
      plan.wouldFail++;
      plan.problems.push(...problems);
      note(line, row, 'would_fail');
    } else {
      plan.wouldCreate++;
      note(line, row, 'would_create', created);
    }
  }
}

const unique = <T>(xs: T[]): T[] => [...new Set(xs)];
/** Of a row's accounts, those the guard found, in the order of their addresses (the order preclaimedForExisting answers in). */
const foundOf = (ids: string[], found: Map<string, Preclaimed>): Preclaimed[] =>
  unique(ids)
    .flatMap((id) => (found.has(id) ? [found.get(id)!] : []))
    .sort((a, b) => (a.email < b.email ? -1 : a.email > b.email ? 1 : 0));
