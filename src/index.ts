// dify-provision as a library: what migration scripts import.
export { createProvisioner, provisionerOn, type BatchHandle, type Provisioner } from './provisioner.js';
export { enqueueBatch, SealRequiredError, type EnqueueOptions, type EnqueueSummary } from './ingest/enqueue-batch.js';
export { StrictValidationError, type WorkspaceInput } from './ingest/input-rows.js';
export type { Plan, PlanLine } from './ingest/plan.js';
export { loadConfig, type Config } from './config.js';
export { openQueueRuntime, openDbRuntime, openKeyStorage, type Runtime, type QueueRuntime } from './runtime.js';
export { readRows, CsvFormatError, type CsvRow, type ReadOptions } from './csv/read-rows.js';
export type { FieldError } from './csv/workspace-row.js';
export type { BatchStatus, BatchListing, OutcomeCounts } from './store/batches.js';
export type { ReportRow } from './store/report.js';
export type { RetryPolicy } from './queue/contract.js';
export type { MintedKey, ListedKey } from './dify/api-keys.js';
export { describeSchema, probeDifySchema, type DifySchema, type Band } from './dify/schema-probe.js';
export { runWorker, type RunningWorker, type RunWorkerOptions } from './worker/run-worker.js';
export { rsaKeySource, type KeyPair, type KeySource } from './crypto/rsa-keys.js';
export type { KeyStorage, DeployedKey } from './storage/key-storage.js';
export * from './errors.js';
export { OUTCOMES, type Outcome } from './types.js';
