// The jobs of one ingest, added while its rows are recorded: each chunk's jobs go to Redis as soon
// as the chunk's rows are written in the batch's transaction, so queueing runs beside recording
// instead of after it. A worker that takes one before the COMMIT cannot see its row yet and waits
// for the batch's lock (worker/provision-workspace.ts). A refused ingest takes back every job it
// added, under the batch's lock, before its ROLLBACK: it queues nothing. An ingest that dies
// while recording leaves a mark in Redis; the next ingest of that batch replaces the jobs it left
// (same ids, other tenant ids) instead of finding them "already queued". Redis failing is no
// refusal: the rows are recorded, and the ingest fails after its COMMIT (a re-run queues them).
import { randomUUID } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import type { QueueDeps } from './lost-jobs.js';
import { jobFor, type AnyJob, type RetryPolicy } from './contract.js';

type Job = ReturnType<typeof jobFor>;

/** Deletes the mark only if it is still this ingest's (a later ingest of the batch may have set its own). */
const DELETE_OWN = `if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end return 0`;

/** How long a refused ingest keeps trying to take back a job a worker holds (a worker waits 2 s for the batch, then hands it back). */
const TAKE_BACK_MS = 15_000;

export class IngestJobs {
  private readonly nonce = randomUUID();
  private readonly markKey: string;
  /** The ids added (round 1: the rows this ingest records for the first time), as their 16-byte digests: 16 MB for a million rows. */
  private readonly digests: Buffer[] = [];
  private readonly idPrefix: string;
  /** Jobs a worker held when this ingest tried to replace an earlier ingest's job of the same id: replaced before COMMIT. */
  private readonly held: Job[] = [];
  private readonly running = new Set<Promise<void>>();
  /**
   * Redis failed: no more jobs are added, but the rows are still recorded (the batch is not
   * refused for it), and `finish` throws the error after the COMMIT; a re-run of the batch, or
   * the workers' sweep, queues the rows whose job is missing.
   */
  private queueFailure: unknown;
  private marked: Promise<boolean> | undefined;
  private leftovers = false;

  constructor(
    private readonly deps: QueueDeps,
    batchId: string,
    private readonly retry: RetryPolicy,
    private readonly inFlight = 4,
  ) {
    // A job id never holds ':' (jobIdFor), so this key is no job's.
    this.markKey = deps.queue.toKey(`ingesting:${batchId}`);
    this.idPrefix = `${batchId}.`;
  }

  /** A Redis step; its failure stops the queueing, not the recording. */
  private async guard<T>(step: () => Promise<T>): Promise<T | undefined> {
    if (this.queueFailure) return undefined;
    try {
      return await step();
    } catch (err) {
      this.queueFailure ??= err;
      return undefined;
    }
  }

  /** Under the batch's lock, before any row is recorded: did an ingest of this batch die while recording? */
  async begin(): Promise<void> {
    this.leftovers = (await this.guard(() => this.deps.redis.exists(this.markKey))) === 1;
  }

  /** Adds the jobs of rows just written (not yet committed); waits while `inFlight` addBulk calls run. */
  async add(specs: AnyJob[]): Promise<void> {
    if (specs.length === 0 || this.queueFailure) return;
    // The mark goes first: any job in Redis before the COMMIT is covered by it.
    if (!(await (this.marked ??= this.guard(() => this.deps.redis.set(this.markKey, this.nonce)).then((r) => r !== undefined)))) return;
    let jobs = specs.map((s) => jobFor(s, this.retry));
    const digests = Buffer.alloc(16 * jobs.length);
    jobs.forEach((j, i) => digests.write(j.opts.jobId.slice(this.idPrefix.length), 16 * i, 'hex'));
    this.digests.push(digests);
    if (this.leftovers) {
      const free = await this.guard(() => this.replacing(jobs));
      if (!free) return;
      jobs = free;
    }
    const adding = this.guard(() => this.deps.queue.addBulk(jobs)).then(() => {});
    this.running.add(adding);
    void adding.finally(() => this.running.delete(adding));
    if (this.running.size >= this.inFlight) await Promise.race(this.running);
  }

  /** Removes a dead ingest's jobs under these ids first; those a worker holds are kept for `settle`. */
  private async replacing(jobs: Job[]): Promise<Job[]> {
    const removed = await Promise.all(jobs.map((j) => this.deps.queue.remove(j.opts.jobId)));
    this.held.push(...jobs.filter((_, i) => removed[i] !== 1));
    return jobs.filter((_, i) => removed[i] === 1);
  }

  /** Before COMMIT: every job added (and any a worker held while it was replaced). */
  async settle(): Promise<void> {
    await Promise.all(this.running);
    const deadline = Date.now() + TAKE_BACK_MS;
    while (this.held.length > 0 && !this.queueFailure) {
      if (Date.now() > deadline)
        throw new Error(`could not replace ${this.held.length} job(s) an earlier ingest of this batch left: a worker holds them`);
      await sleep(250);
      const jobs = this.held.splice(0);
      const free = await this.guard(() => this.replacing(jobs));
      if (free) await this.guard(() => this.deps.queue.addBulk(free));
    }
  }

  /**
   * The ingest was refused: every job it added is removed, before the ROLLBACK (still under the
   * batch's lock, so no other ingest of the batch adds the same ids meanwhile). A job a worker
   * holds (it waits for the batch, then hands it back) is taken once handed back. If Redis fails
   * here the mark stays, and the next ingest of the batch replaces what is left.
   */
  async undo(): Promise<void> {
    await Promise.all(this.running);
    if (!(await this.marked)) return;
    try {
      // Removed in pages of at most 1,000 (each chunk's ids are rebuilt from their digests).
      const removeAll = async (ids: string[]) => {
        const removed = await Promise.all(ids.map((id) => this.deps.queue.remove(id)));
        return ids.filter((_, j) => removed[j] !== 1);
      };
      let left: string[] = [];
      for (const d of this.digests)
        left.push(
          ...(await removeAll(Array.from({ length: d.length / 16 }, (_, i) => this.idPrefix + d.toString('hex', 16 * i, 16 * (i + 1))))),
        );
      const deadline = Date.now() + TAKE_BACK_MS;
      while (left.length > 0 && Date.now() <= deadline) {
        await sleep(250);
        left = await removeAll(left);
      }
      if (left.length === 0) await this.unmark();
    } catch {
      // The mark stays: the next ingest of this batch replaces the jobs left.
    }
  }

  /** After COMMIT: the batch's rows are visible, its jobs are theirs (or Redis failed: said now, the rows are kept). */
  async finish(): Promise<void> {
    if (this.queueFailure) throw this.queueFailure;
    if (await this.marked) await this.unmark();
  }

  private async unmark(): Promise<void> {
    await this.deps.redis.eval(DELETE_OWN, 1, this.markKey, this.nonce);
  }
}
