// The console's files, read once when the dashboard starts: its page and stylesheet (web/) and its
// browser code, compiled from web/*.ts by `npm run build` (tsconfig.web.json) into dist/web/.
// Served from this origin only: the page runs no inline script and asks no other site for anything.
import { readdir, readFile } from 'node:fs/promises';
import { extname } from 'node:path';
import { projectFile } from '../common/project-files.js';

export interface Asset {
  type: string;
  body: string;
}

export interface ConsoleAssets {
  page: string;
  /** By file name, served at /assets/<name>. */
  files: Map<string, Asset>;
}

const TYPES: Record<string, string> = { '.js': 'text/javascript; charset=utf-8', '.css': 'text/css; charset=utf-8' };

export async function loadConsoleAssets(): Promise<ConsoleAssets> {
  const compiled = projectFile('dist', 'web');
  const scripts = await readdir(compiled).catch(() => {
    throw new Error(`the dashboard's browser code is not built (${compiled} is missing): run npm run build`);
  });
  const files = new Map<string, Asset>();
  for (const name of scripts.filter((n) => n.endsWith('.js'))) {
    files.set(name, { type: TYPES['.js']!, body: await readFile(projectFile('dist', 'web', name), 'utf8') });
  }
  for (const name of ['console.css'])
    files.set(name, { type: TYPES[extname(name)]!, body: await readFile(projectFile('web', name), 'utf8') });
  return { page: await readFile(projectFile('web', 'index.html'), 'utf8'), files };
}
