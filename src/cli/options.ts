// Parsers for the CLI's option values: each refuses what does not parse, naming the option.
import { readFile } from 'node:fs/promises';
import { InvalidArgumentError } from 'commander';
import { UsageError } from '../common/errors.js';
import { UNREADABLE } from '../input/read-options.js';
import type { Delimiter } from '../input/decode.js';

export const positiveInt = (name: string) => (value: string) => {
  const n = Number(value);
  if (!Number.isInteger(n) || n < 1) throw new InvalidArgumentError(`${name} must be a whole number ≥ 1`);
  return n;
};

/** "600", "600s", "10m", "2h" → seconds; anything else is refused (never NaN). */
export function duration(name: string) {
  return (value: string): number => {
    const m = /^(\d+)(s|m|h)?$/.exec(value.trim());
    if (!m) throw new InvalidArgumentError(`${name} takes a duration: seconds (600 or 600s), minutes (10m) or hours (2h)`);
    return Number(m[1]) * { s: 1, m: 60, h: 3600 }[(m[2] ?? 's') as 's' | 'm' | 'h'];
  };
}

/** "10/s", "600/m" → a BullMQ limiter. */
export function rateLimit(value: string): { max: number; durationMs: number } {
  const m = /^(\d+)\/(s|m|h)$/.exec(value.trim());
  if (!m || Number(m[1]) < 1) throw new InvalidArgumentError('--rate-limit takes N/s, N/m or N/h, e.g. 10/s');
  return { max: Number(m[1]), durationMs: { s: 1000, m: 60_000, h: 3_600_000 }[m[2] as 's' | 'm' | 'h'] };
}

/** "1048576", "512MiB", "2G" → bytes (K, M, G, with or without "iB"/"B", are powers of 1024). */
export function byteSize(name: string) {
  return (value: string): number => {
    const m = /^(\d+)\s*(?:([kmg])(?:i?b)?|b)?$/i.exec(value.trim());
    const n = m ? Number(m[1]) * 1024 ** ({ k: 1, m: 2, g: 3 }[(m[2] ?? '').toLowerCase() as 'k' | 'm' | 'g'] ?? 0) : NaN;
    if (!Number.isSafeInteger(n) || n < 1) throw new InvalidArgumentError(`${name} takes a size in bytes: 1073741824, 512MiB, 2G`);
    return n;
  };
}

/** --delimiter: , ; or tab (a TAB character too). */
export function delimiter(value: string): ',' | ';' | '\t' {
  const d = value.toLowerCase() === 'tab' || value === '\\t' ? '\t' : value;
  if (d !== ',' && d !== ';' && d !== '\t') throw new InvalidArgumentError('--delimiter takes , ; or tab');
  return d;
}

/** --map "Heading=column" (repeatable): the heading up to the last `=`, the column after it. */
export function columnMapping(value: string, all: Record<string, string> = {}): Record<string, string> {
  const at = value.lastIndexOf('=');
  if (at <= 0)
    throw new InvalidArgumentError('--map takes "Heading=column", e.g. --map "Owner E-mail=owner_email" (or "Notes=-" to drop it)');
  return { ...all, [value.slice(0, at).trim()]: value.slice(at + 1).trim() };
}

/** --trust-account EMAIL (repeatable): the addresses collected. */
export function trustedAccount(value: string, all: string[] = []): string[] {
  const email = value.trim();
  if (!email.includes('@')) throw new InvalidArgumentError('--trust-account takes an email address, e.g. --trust-account ceo@a.example');
  return [...all, email];
}

/** The flags `ingest` and `apply` share: reading a file, recording and queueing it, waiting for it. */
export interface BatchFileFlags {
  batchId?: string;
  dryRun?: boolean;
  strict?: boolean;
  wait?: boolean;
  reportDir: string;
  overwrite?: boolean;
  createMissingOwners?: boolean;
  /** --trust-account (repeatable): addresses the pre-claim guard lets through (docs/security.md). */
  trustAccount?: string[];
  invite?: boolean;
  sendInvites?: boolean;
  /** The operator's public key PEM (the file's content). */
  sealTo?: string;
  ignoreUnknownColumns?: boolean;
  delimiter?: Delimiter;
  encoding?: string;
  sheet?: string;
  headerRow?: number;
  /** --map: heading → column. */
  map?: Record<string, string>;
  json?: boolean;
  attempts: number;
  backoffMs: number;
  maxRows?: number;
  maxBytes?: number;
}

/** A file a flag names (--seal-to, --key), read whole: else one line naming the flag, the file and why, not Node's raw error. */
export async function readFlagFile(flag: string, path: string): Promise<string> {
  return readFile(path, 'utf8').catch((err: NodeJS.ErrnoException) => {
    throw new UsageError(`${flag} ${path}: cannot read it: ${UNREADABLE[err.code ?? ''] ?? err.message}`);
  });
}
