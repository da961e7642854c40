// Runs the real CLI in this process and reports its peak RSS and CPU time on exit (for the ingest benchmark).
import { writeSync } from 'node:fs';

process.on('exit', () => {
  const u = process.resourceUsage();
  writeSync(2, `maxrss_kb=${u.maxRSS} cpu_us=${u.userCPUTime + u.systemCPUTime}\n`);
});
await import('../src/cli/main.js');
