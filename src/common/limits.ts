// The documented bounds of one input and one batch, shared by the reading path and ingest.

/** The default bounds of one batch (EnqueueOptions.maxRows, maxBytes; --max-rows, --max-bytes). */
export const BATCH_LIMITS = { rows: 1_000_000, bytes: 1 << 30 };

/** A byte count as people read it: "1 GiB", "64 MiB", or bytes. */
export const sizeWords = (n: number): string =>
  n % (1 << 30) === 0 ? `${n / (1 << 30)} GiB` : n % (1 << 20) === 0 ? `${n / (1 << 20)} MiB` : `${n} bytes`;
