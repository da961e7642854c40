// The shapes of the dashboard's JSON answers this page reads (src/dashboard/server.ts).

export const OUTCOMES = ['queued', 'active', 'created', 'existing', 'applied', 'unchanged', 'rejected', 'failed', 'cancelled'] as const;
export type Outcome = (typeof OUTCOMES)[number];
export type Counts = Record<Outcome, number>;

/** What a batch does: provision new workspaces (ingest) or change existing ones (apply). */
export type Kind = 'provision' | 'changes';

/** The outcomes a batch of each kind can have, in the order they are shown. */
export const OUTCOMES_OF: Record<Kind, readonly Outcome[]> = {
  provision: ['queued', 'active', 'created', 'existing', 'rejected', 'failed', 'cancelled'],
  changes: ['queued', 'active', 'applied', 'unchanged', 'rejected', 'failed', 'cancelled'],
};

export interface Info {
  database: string;
  queue: string;
  workers: number | null;
  redisUnreachable: boolean;
  redisAdvice: string;
  noWorker: string;
  boardNote: string;
}

export interface Listing {
  batchId: string;
  kind: Kind;
  source: string | null;
  createdAt: string;
  total: number;
  counts: Counts;
  state: string;
}

export interface Status {
  batchId: string;
  kind: Kind;
  total: number;
  finished: number;
  counts: Counts;
  state: string;
  advice: string | null;
  workers: number | null;
  redisUnreachable: boolean;
  /** Active rows while Redis does not answer: not running, waiting for Redis. */
  waitingForRedis: number;
  /** The options the batch was made with (the library's names) and how its file was read. */
  options: Record<string, unknown>;
  input: Record<string, unknown> | null;
  throughput: { perSecond: number; etaSeconds: number | null; bucketSeconds: number; timeline: { n: number }[] };
}

export interface Row {
  line: number;
  /** A change row's action and role (a change batch's); null on a provisioning row. */
  action: string | null;
  role: string | null;
  externalId: string | null;
  workspaceName: string | null;
  ownerEmail: string | null;
  outcome: Outcome;
  tenantId: string | null;
  attempts: number;
  apiKey: string | null;
  error: string | null;
}

/** GET /api/v1/batches/{id}/rows/{line}: one row in full (the API's snake_case). */
export interface RowDetail {
  line: number;
  external_id: string | null;
  workspace_name: string | null;
  owner_email: string | null;
  outcome: Outcome;
  tenant_id: string | null;
  public_key_sha256: string | null;
  attempts: number;
  duration_ms: number | null;
  accounts_created: string[] | null;
  api_key: string | null;
  error: string | null;
  mail: string | null;
  round: number;
  recorded_at: string;
  updated_at: string;
  finished_at: string | null;
  members: { email: string; role: string }[];
  invitations_issued: {
    email: string;
    role: string;
    issued_at: string;
    stored_at: string | null;
    mail: string | null;
    superseded: boolean;
  }[];
}

export interface RowsPage {
  rows: Row[];
  more: boolean;
}

/** GET /api/ingest-options: one option of the API, as New batch shows it. */
export interface OptionField {
  name: string;
  kind: 'boolean' | 'number' | 'text' | 'choice' | 'pem' | 'map';
  choices?: string[];
  description: string;
}

/** POST /api/v1/plans: what ingesting a file would do. */
export interface Plan {
  total: number;
  would_create: number;
  existing: number;
  rejected: number;
  would_fail: number;
  likely_duplicates: number;
  problems: { line: number; field: string; message: string }[];
  input?: { format: 'csv' | 'xlsx'; encoding?: string; delimiter?: string; sheet?: string; empty_rows: number };
  /** The first rows, each with its verdict (the counts and problems cover every row). */
  rows: PlanRow[];
}

export interface PlanRow {
  line: number;
  workspace_name: string | null;
  owner_email: string | null;
  verdict: 'would_create' | 'existing' | 'rejected' | 'would_fail';
}

/** POST /api/v1/batches: the batch recorded and queued. */
export interface Enqueued {
  batch_id: string;
  total: number;
  queued: number;
  rejected: number;
  already_in_batch: number;
}
