import { mkdirSync, writeFileSync } from 'node:fs';
import { cpus, totalmem } from 'node:os';
import { dirname, resolve } from 'node:path';

/** Where bench JSON goes: test/bench/results/<name>.json, relative to the repo root (the cwd of npm run). */
export function writeBenchResult(name: string, result: Record<string, unknown>): string {
  const file = resolve('test/bench/results', `${name}.json`);
  mkdirSync(dirname(file), { recursive: true });
  const machine = { cpus: cpus().length, cpuModel: cpus()[0]?.model ?? 'unknown', memGiB: Math.round(totalmem() / 2 ** 30), node: process.version, arch: process.arch };
  writeFileSync(file, JSON.stringify({ bench: name, at: new Date().toISOString(), machine, ...result }, null, 2) + '\n');
  return file;
}
