import { describe, expect, it } from 'vitest';
import { AUTO_UPGRADE_CATEGORIES, upgradeTimeOfDay } from '../../src/dify/workspace-writer.js';
import { KNOWN_SLOTS } from '../helpers/dify-checks.js';

describe("Dify's create_tenant constants", () => {
  it('derives the upgrade slot from SHA-256 of the lower-case id, first 8 bytes big-endian, mod 96, × 900', () => {
    // Pinned values computed outside this code base, with Python:
    //   int.from_bytes(hashlib.sha256(id.encode()).digest()[:8], 'big') % 96 * 900
    for (const [id, slot] of Object.entries(KNOWN_SLOTS)) {
      expect(upgradeTimeOfDay(id), id).toBe(slot);
      expect(upgradeTimeOfDay(id.toUpperCase()), id).toBe(slot);
    }
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
