// The dashboard as a user starts it (the built CLI, a process of its own) and the headless
// Chromium the browser tests drive (playwright-core, Debian's chromium or CHROMIUM_PATH).
import { chromium, type Browser } from 'playwright-core';
import { freePort } from '../../src/services/local-services.js';
import { startCli, type Background } from './cli.js';

/** Starts `dify-provision dashboard` on a free port; resolves once it prints its address (or ends). */
export async function startDashboard(
  env: NodeJS.ProcessEnv,
  args: string[] = [],
): Promise<{ dash: Background; base: string; port: number }> {
  const port = await freePort();
  const dash = startCli(['dashboard', '--port', String(port), ...args], env);
  let ended = false;
  void dash.exited.then(() => (ended = true));
  for (let i = 0; i < 1200 && !ended && !dash.output().includes('dashboard: '); i++) await new Promise((r) => setTimeout(r, 100));
  return { dash, base: `http://127.0.0.1:${port}`, port };
}

export function launchChromium(): Promise<Browser> {
  return chromium.launch({
    executablePath: process.env.CHROMIUM_PATH ?? '/usr/bin/chromium',
    args: [
      '--headless',
      '--no-sandbox',
      '--disable-gpu',
      '--disable-quic',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
    ],
  });
}
