// dify-provision as a library: what migration scripts import.
export { createProvisioner, StrictValidationError, type BatchHandle, type EnqueueOptions, type Provisioner, type WorkspaceInput } from './provisioner.js';
export { loadConfig, type Config } from './config/config.js';
export { readRows, CsvFormatError, type CsvRow } from './csv/read-rows.js';
export type { BatchStatus, BatchListing } from './results/batches.js';
export type { ReportRow } from './results/report.js';
export type { Plan } from './queue/plan.js';
export { runWorker, type RunningWorker, type RunWorkerOptions } from '../workers/provision-worker.js';
export { rsaKeySource, type KeyPair, type KeySource } from './provision/rsa-keys.js';
export { OUTCOMES, type Outcome } from './types.js';
