// Default batch ids: a file's batch is named after the file and its content, so ingesting the
// same file again is the same batch (and queues nothing twice); stdin gets a fresh id.
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { basename } from 'node:path';
import { asBatchId, generatedBatchId, type BatchId } from '../common/types.js';

export async function batchIdForFile(path: string): Promise<BatchId> {
  const hash = createHash('sha256');
  for await (const chunk of createReadStream(path)) hash.update(chunk as Buffer);
  const stem = slug(basename(path).replace(/\.[^.]*$/, '')) || 'batch';
  return asBatchId(`${stem}-${hash.digest('hex').slice(0, 10)}`);
}

export const batchIdForStdin = (now = new Date()): BatchId => generatedBatchId('stdin', now);

function slug(s: string): string {
  return s
    .replace(/[^A-Za-z0-9._-]+/g, '-')
    .replace(/^[^A-Za-z0-9]+/, '')
    .slice(0, 40);
}
