// A run of an existing batch with options it was not made with: which are said, and what the CLI tells the operator to do.
import { describe, expect, it } from 'vitest';
import { askedOptions, optionsNotApplied, type EnqueueOptions } from '../../src/ingest/enqueue-batch.js';
import { notAppliedWords } from '../../src/cli/ingest-command.js';
import { DEFAULT_RETRY } from '../../src/queue/contract.js';

const made = (opts: EnqueueOptions) => askedOptions(opts);
const differs = (now: EnqueueOptions, then: EnqueueOptions, retry = DEFAULT_RETRY) =>
  optionsNotApplied(askedOptions(now), made(then), retry);

describe('options a run of an existing batch asks for', () => {
  it('names flags and addresses the batch lacks; options left out, or the same, are no difference', () => {
    expect(differs({ createMissingOwners: true }, {})).toEqual(['createMissingOwners']);
    expect(differs({ createMissingOwners: true }, { createMissingOwners: true })).toEqual([]);
    expect(differs({}, { createMissingOwners: true, invite: true })).toEqual([]);
    expect(differs({ invite: true, sendInvites: true, mintDatasetKeys: true }, { invite: true })).toEqual([
      'mintDatasetKeys',
      'sendInvites',
    ]);
    expect(differs({ trustAccounts: ['CEO@a.example'] }, { trustAccounts: ['ceo@a.example'] })).toEqual([]);
    expect(differs({ trustAccounts: ['ceo@a.example', 'cfo@a.example'] }, { trustAccounts: ['ceo@a.example'] })).toEqual(['trustAccounts']);
    expect(differs({ retry: { attempts: 9, backoffMs: 1000 } }, {}, DEFAULT_RETRY)).toEqual(['retry']);
    expect(differs({ retry: { ...DEFAULT_RETRY } }, {}, DEFAULT_RETRY)).toEqual([]);
  });

  it('tells the operator what to run instead: retry for the flags retry takes, a new batch id for the others', () => {
    expect(notAppliedWords('b1', ['createMissingOwners'], {})).toBe(
      "batch b1 existed already, made without this run's --create-missing-owners: a batch keeps the options it was made with, so it was not applied; for its failed rows run: dify-provision retry b1 --create-missing-owners",
    );
    const words = notAppliedWords('b1', ['trustAccounts', 'invite'], { trustAccount: ["o'neil@a.example", 'ceo@a.example'] });
    expect(words).toContain("retry b1 --trust-account 'o'\\''neil@a.example' --trust-account ceo@a.example;");
    expect(words).toContain('for --invite, ingest under a new --batch-id (rows created already answer "existing")');
  });
});
