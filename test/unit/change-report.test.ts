// The library's report of a change batch: the change's own fields, and `error` only where the row
// failed or was rejected (the detail of an applied row is no error a script should stop on).
import { describe, expect, it } from 'vitest';
import { changeReportRow } from '../../src/report/format.js';
import type { ReportRow } from '../../src/store/report.js';

const row = (over: Partial<ReportRow>): ReportRow => ({
  line: 2,
  action: 'transfer_owner',
  role: null,
  externalId: 'crm-1003',
  workspaceName: null,
  ownerEmail: 'bob@acme.example',
  outcome: 'applied',
  tenantId: '6f1c2a4e-9b7d-4c3e-8a21-3d5e7f9b1c20',
  fingerprint: null,
  attempts: 1,
  durationMs: 12,
  accountsCreated: null,
  apiKey: null,
  error: null,
  mail: null,
  difyTasks: null,
  invitations: null,
  ...over,
});

describe('changeReportRow', () => {
  it('an applied row with a detail has no error: the detail is in detail', () => {
    const r = changeReportRow(row({ error: 'the previous owner is admin now' }));
    expect(r).toMatchObject({ outcome: 'applied', error: null, detail: 'the previous owner is admin now', email: 'bob@acme.example' });
  });

  it('unchanged: the reason is its detail, not an error', () => {
    expect(changeReportRow(row({ outcome: 'unchanged', error: 'bob@acme.example is the owner already' }))).toMatchObject({
      error: null,
      detail: 'bob@acme.example is the owner already',
    });
  });

  it('failed and rejected rows keep their error (and the same words as detail)', () => {
    for (const outcome of ['failed', 'rejected'] as const)
      expect(changeReportRow(row({ outcome, error: 'email: no Dify account has the email "x@y"' }))).toMatchObject({
        error: 'email: no Dify account has the email "x@y"',
        detail: 'email: no Dify account has the email "x@y"',
      });
  });

  it('a rename: name is the name it gives; ownerEmail and workspaceName keep their values', () => {
    const r = changeReportRow(row({ action: 'rename', ownerEmail: null, workspaceName: 'Acme R&D' }));
    expect(r).toMatchObject({ name: 'Acme R&D', workspaceName: 'Acme R&D', email: null, ownerEmail: null });
  });
});
