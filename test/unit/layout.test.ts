// The layout docs/design.md promises: each folder of src/ has one job (listed there), the root
// holds only the public entry points, our own schema's SQL lives in store/, and no two files
// import each other, even through others.
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';
import { describe, expect, it } from 'vitest';
import { PACKAGE_ROOT } from '../../src/common/project-files.js';

const SRC = join(PACKAGE_ROOT, 'src');
const walk = (d: string): string[] =>
  readdirSync(d).flatMap((n) => {
    const p = join(d, n);
    return statSync(p).isDirectory() ? walk(p) : p.endsWith('.ts') ? [p] : [];
  });
const files = walk(SRC);
const rel = (f: string) => relative(SRC, f).split('\\').join('/');
const text = new Map(files.map((f) => [f, readFileSync(f, 'utf8')]));

/** Every relative module a file imports (static, type-only, re-exports and dynamic imports alike). */
function importsOf(file: string): string[] {
  const found = [...text.get(file)!.matchAll(/(?:from|import)\s*\(?\s*'(\.{1,2}\/[^']+)'/g)].map((m) =>
    resolve(dirname(file), m[1]!.replace(/\.js$/, '.ts')),
  );
  return found.filter((f) => text.has(f));
}

export function importCycles(): string[][] {
  const graph = new Map(files.map((f) => [f, importsOf(f)]));
  const state = new Map<string, 'open' | 'done'>();
  const stack: string[] = [];
  const cycles: string[][] = [];
  const visit = (f: string) => {
    state.set(f, 'open');
    stack.push(f);
    for (const g of graph.get(f)!) {
      if (state.get(g) === 'open') cycles.push([...stack.slice(stack.indexOf(g)), g].map(rel));
      else if (!state.has(g)) visit(g);
    }
    stack.pop();
    state.set(f, 'done');
  };
  for (const f of files) if (!state.has(f)) visit(f);
  return cycles;
}

describe('the layout of src/', () => {
  it('holds only the public entry points at its root', () => {
    expect(
      files
        .filter((f) => dirname(f) === SRC)
        .map(rel)
        .sort(),
    ).toEqual(['index.ts', 'provisioner.ts']);
  });

  it('gives every folder a line in docs/design.md, and names no folder that is gone', () => {
    const design = readFileSync(join(PACKAGE_ROOT, 'docs', 'design.md'), 'utf8');
    const table = design.slice(design.indexOf('## Layout'), design.indexOf('\n## ', design.indexOf('## Layout') + 1));
    const named = new Set([...table.matchAll(/`src\/([a-z-]+)\/`/g)].map((m) => m[1]!));
    const folders = new Set(files.filter((f) => dirname(f) !== SRC).map((f) => rel(f).split('/')[0]!));
    expect([...folders].filter((f) => !named.has(f)).sort()).toEqual([]);
    expect([...named].filter((f) => !folders.has(f)).sort()).toEqual([]);
  });

  it('keeps every statement on our own schema in store/', () => {
    const outside = files.filter((f) => !rel(f).startsWith('store/') && /\$\{SCHEMA\}|dify_provision\.\w/.test(text.get(f)!));
    expect(outside.map(rel)).toEqual([]);
  });

  it('has no import circles', () => {
    expect(importCycles()).toEqual([]);
  });
});
