import { createHash } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { AUTO_UPGRADE_CATEGORIES, upgradeTimeOfDay } from '../../src/dify/workspace-writer.js';

describe("Dify's create_tenant constants", () => {
  it('derives the upgrade slot from SHA-256 of the lower-case id, first 8 bytes big-endian, mod 96, × 900', () => {
    const id = '6f1c2a4e-9b7d-4c3e-8a21-3d5e7f9b1c20';
    const digest = createHash('sha256').update(id).digest('hex');
    const expected = Number(BigInt(`0x${digest.slice(0, 16)}`) % 96n) * 900;
    expect(upgradeTimeOfDay(id)).toBe(expected);
    expect(upgradeTimeOfDay(id.toUpperCase())).toBe(expected);
  });

  it('always lands on a 15-minute slot within the day', () => {
    for (let i = 0; i < 200; i++) {
      const slot = upgradeTimeOfDay(crypto.randomUUID());
      expect(slot % 900).toBe(0);
      expect(slot).toBeGreaterThanOrEqual(0);
      expect(slot).toBeLessThan(86_400);
    }
  });

  it('seeds six categories: latest for model, fix_only for the rest', () => {
    expect(Object.fromEntries(AUTO_UPGRADE_CATEGORIES)).toEqual({
      tool: 'fix_only',
      model: 'latest',
      extension: 'fix_only',
      'agent-strategy': 'fix_only',
      datasource: 'fix_only',
      trigger: 'fix_only',
    });
  });
});
