// The README is short and sends readers to docs/: every relative link in README.md and docs/*.md
// must reach a file that exists (and, into a Markdown page, a heading that exists), and the test
// command the README documents must be the one CI runs.
import { existsSync } from 'node:fs';
import { readFile, readdir } from 'node:fs/promises';
import { dirname, join, relative } from 'node:path';
import { describe, expect, it } from 'vitest';
import { PACKAGE_ROOT, projectFile } from '../../src/common/project-files.js';
import { readmeSection, shellBlocks } from '../helpers/readme.js';

const pages = ['README.md', ...(await readdir(projectFile('docs'))).filter((f) => f.endsWith('.md')).map((f) => `docs/${f}`)];
const text = new Map(await Promise.all(pages.map(async (p) => [p, await readFile(projectFile(p), 'utf8')] as const)));

/** Markdown outside fenced code blocks. */
const prose = (md: string): string => md.replace(/^```[\s\S]*?^```/gm, '');

/** GitHub's anchors for a page's headings: lower case, punctuation dropped, spaces as hyphens, repeats numbered. */
function anchors(md: string): Set<string> {
  const seen = new Map<string, number>();
  const out = new Set<string>();
  for (const [, heading] of prose(md).matchAll(/^#{1,6} (.+)$/gm)) {
    const base = heading!
      .trim()
      .toLowerCase()
      .replace(/[^\p{L}\p{N}\s_-]/gu, '')
      .replace(/\s/g, '-');
    const n = seen.get(base) ?? 0;
    seen.set(base, n + 1);
    out.add(n === 0 ? base : `${base}-${n}`);
  }
  return out;
}

/** Every relative link target (`[text](target)`, images too) in a page's prose. */
const links = (md: string): string[] =>
  [...prose(md).matchAll(/\]\(([^)\s]+)\)/g)].map((m) => m[1]!).filter((t) => !/^[a-z][a-z0-9+.-]*:/i.test(t));

describe('the documentation', () => {
  it('finds README.md and the docs pages, and sees links and anchors as GitHub does', () => {
    expect(pages).toEqual(expect.arrayContaining(['README.md', 'docs/design.md', 'docs/operating.md']));
    expect(links('see [a](docs/x.md#y), ![b](p.png), [c](https://e.example/z) and\n```sh\n[d](e)\n```\n')).toEqual([
      'docs/x.md#y',
      'p.png',
    ]);
    expect([...anchors("# Title\n## From the host, with Dify's `.env`\n## A — B\n## A — B\n")]).toEqual([
      'title',
      'from-the-host-with-difys-env',
      'a--b',
      'a--b-1',
    ]);
  });

  it.each(pages)('%s: every relative link reaches a file, and its #anchor a heading there', (page) => {
    const broken: string[] = [];
    for (const target of links(text.get(page)!)) {
      const [path, anchor] = target.split('#') as [string, string | undefined];
      const file = path === '' ? projectFile(page) : join(dirname(projectFile(page)), decodeURIComponent(path));
      const shown = relative(PACKAGE_ROOT, file);
      if (!existsSync(file)) broken.push(`${target}: no file ${shown}`);
      else if (anchor !== undefined && file.endsWith('.md')) {
        const md = text.get(shown) ?? '';
        if (!text.has(shown)) broken.push(`${target}: ${shown} is not a page this test reads`);
        else if (!anchors(md).has(anchor)) broken.push(`${target}: ${shown} has no heading #${anchor}`);
      }
    }
    expect(broken).toEqual([]);
  });

  it('every docs page is linked from the README, and starts with its title and a line on its purpose', () => {
    const fromReadme = new Set(links(text.get('README.md')!).map((t) => t.split('#')[0]));
    for (const page of pages.filter((p) => p !== 'README.md')) {
      expect(fromReadme, page).toContain(page);
      expect(text.get(page), page).toMatch(/^# .+\n\n\S/);
    }
  });

  it(".ci/run runs exactly the test command the README's Quick start documents", async () => {
    const [quickStart] = shellBlocks(readmeSection('## Quick start'));
    const documented = quickStart!
      .split('\n')
      .filter((l) => /#.*\bthe whole suite\b/.test(l))
      .map((l) => l.replace(/\s+#.*$/, '').trim());
    expect(documented).toEqual(['npm test']);
    const ci = (await readFile(projectFile('.ci', 'run'), 'utf8')).split('\n').map((l) => l.replace(/\s+#.*$/, '').trim());
    expect(ci).toContain(documented[0]);
  });
});
