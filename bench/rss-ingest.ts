// Runs the real CLI in this process and reports its peak RSS on exit (for the ingest benchmark).
import { writeSync } from 'node:fs';

process.on('exit', () => writeSync(2, `maxrss_kb=${process.resourceUsage().maxRSS}\n`));
await import('../src/cli/main.js');
