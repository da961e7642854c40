// The shapes of the dashboard's JSON answers this page reads (src/dashboard/server.ts).

export const OUTCOMES = ['queued', 'active', 'created', 'existing', 'rejected', 'failed', 'cancelled'] as const;
export type Outcome = (typeof OUTCOMES)[number];
export type Counts = Record<Outcome, number>;

export interface Info {
  database: string;
  queue: string;
  workers: number | null;
  noWorker: string;
  boardNote: string;
}

export interface Listing {
  batchId: string;
  source: string | null;
  createdAt: string;
  total: number;
  counts: Counts;
  state: string;
}

export interface Status {
  batchId: string;
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
