// The documentation's own text (README.md and the pages in docs/), for tests that run what it tells
// an operator to type or check what it lists (so the two cannot drift).
import { readFile } from 'node:fs/promises';
import { projectFile } from '../../src/common/project-files.js';

export const README = await readFile(projectFile('README.md'), 'utf8');

/** A reference page of docs/, e.g. `deploying.md`. */
export const docsPage = (name: string): Promise<string> => readFile(projectFile('docs', name), 'utf8');

/**
 * `text`'s section under `heading` (e.g. `### From the host`), up to the next heading of its level
 * or higher (a `# comment` in a fenced code block is not a heading); `file` names it in the error.
 */
export function sectionOf(text: string, heading: string, file: string): string {
  const at = text.indexOf(`\n${heading}\n`);
  if (at === -1) throw new Error(`${file} has no heading "${heading}"`);
  const level = heading.split(' ')[0]!.length;
  const lines = text.slice(at + heading.length + 2).split('\n');
  let fenced = false;
  const end = lines.findIndex((line) => {
    if (line.startsWith('```')) fenced = !fenced;
    return !fenced && new RegExp(`^#{1,${level}} `).test(line);
  });
  return (end === -1 ? lines : lines.slice(0, end)).join('\n');
}

/** The README's section under `heading`. */
export const readmeSection = (heading: string): string => sectionOf(README, heading, 'README.md');

/** The section under `heading` of the docs page `name` (e.g. `docsSection('deploying.md', '## From the host, …')`). */
export const docsSection = async (name: string, heading: string): Promise<string> =>
  sectionOf(await docsPage(name), heading, `docs/${name}`);

/** The ```sh blocks of a text, in order. */
export const shellBlocks = (text: string): string[] => [...text.matchAll(/```sh\n([\s\S]*?)```/g)].map((m) => m[1]!);
