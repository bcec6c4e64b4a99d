/**
 * `npm run bench`: runs every bench in its own process (so one's memory and JIT state do not skew
 * the next) and stops at the first failure. Each bench prints its own one-line summary.
 */
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

const names = (process.argv.slice(2).length ? process.argv.slice(2) : ['export', 'train-throughput', 'distill', 'edge', 'cloud-ingest', 'registry-durability', 'cloud-api', 'fleet']).filter((n) => {
  const ok = existsSync(fileURLToPath(new URL(`./${n}.bench.js`, import.meta.url)));
  if (!ok) console.error(`bench ${n}: not built (no dist/test/bench/${n}.bench.js), skipped`);
  return ok;
});
for (const name of names) {
  console.error(`» bench ${name}`);
  const r = spawnSync(process.execPath, [fileURLToPath(new URL(`./${name}.bench.js`, import.meta.url))], { stdio: 'inherit' });
  if (r.status !== 0) {
    console.error(`bench ${name} failed (exit ${r.status ?? r.signal})`);
    process.exit(1);
  }
}
