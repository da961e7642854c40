// The CPU one PostgreSQL backend spends per call of a statement (from /proc: the server must run on
// this machine), each call a round trip on one connection, as a worker's pool makes it:
//   node dist/bench/backend-cpu.js postgres://…/db 'SELECT 1' [calls]
// Measures what a statement costs the database, free of the machine's noise that a pipeline
// run's rate carries (BENCHMARKS.md, issue 34).
import { readFileSync } from 'node:fs';
import { createPool } from '../src/db/pool.js';

const [url, sql, n = '3000'] = process.argv.slice(2);
if (!url || !sql) {
  console.error("usage: node dist/bench/backend-cpu.js DATABASE_URL 'SQL' [calls]");
  process.exit(2);
}
const calls = Number(n);
const db = createPool(url, 1, 'dify-provision-bench');
const pid = (await db.query<{ p: number }>('SELECT pg_backend_pid() AS p')).rows[0]!.p;
/** utime + stime of the backend, in ms. */
const cpuMs = () => {
  const f = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ');
  return ((Number(f[11]) + Number(f[12])) * 1000) / 100;
};
for (let i = 0; i < Math.min(300, calls); i++) await db.query(sql);
const before = cpuMs();
const started = performance.now();
for (let i = 0; i < calls; i++) await db.query(sql);
const cpu = ((cpuMs() - before) * 1000) / calls;
const wall = ((performance.now() - started) * 1000) / calls;
console.log(`${calls} calls: backend CPU ${cpu.toFixed(1)} µs a call, wall ${wall.toFixed(1)} µs a call`);
await db.end();
