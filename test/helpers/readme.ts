// The README's own text, for tests that run what it tells an operator to type (so the two cannot drift).
import { readFile } from 'node:fs/promises';
import { projectFile } from '../../src/common/project-files.js';

export const README = await readFile(projectFile('README.md'), 'utf8');

/** The README's section under `heading` (e.g. `### From the host`), up to the next heading of its level or higher. */
export function readmeSection(heading: string): string {
  const at = README.indexOf(`\n${heading}\n`);
  if (at === -1) throw new Error(`README.md has no heading "${heading}"`);
  const level = heading.split(' ')[0]!.length;
  const rest = README.slice(at + heading.length + 2);
  const end = rest.search(new RegExp(`^#{1,${level}} `, 'm'));
  return end === -1 ? rest : rest.slice(0, end);
}

/** The ```sh blocks of a text, in order. */
export const shellBlocks = (text: string): string[] => [...text.matchAll(/```sh\n([\s\S]*?)```/g)].map((m) => m[1]!);
