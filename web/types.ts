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

export interface RowsPage {
  rows: Row[];
  more: boolean;
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
