/**
 * A device as deploy/install-edge.sh leaves it, for the agent update tests that run the real unit
 * file's commands under a fake systemd (issue 14): a `--prefix` root with the app in `opt/apprentice`
 * (a fake agent bundle and the real launcher) and the data dir in `var/lib/apprentice`. The bundle's
 * entry point imports the program named by FAKE_AGENT_MAIN (test/fixtures/fake-agent*.ts), which runs
 * the real edge/agent code; its file `behavior` says how that version behaves (good, crash, silent).
 */
import { copyFileSync, mkdirSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { BundleFile } from '../fixtures/agent-release.js';

const REPO = fileURLToPath(new URL('../../', import.meta.url));
export const AGENT_UNIT = join(REPO, 'deploy/systemd/apprentice-edge.service');
export const AGENT_LAUNCHER = join(REPO, 'deploy/apprentice-launcher.sh');

/** The files of fake agent `version`: package.json, the entry point, `behavior`, and `filler` (to span several chunks). */
export function fakeAgentFiles(version: string, behavior: string, filler: BundleFile): BundleFile[] {
  return [
    { path: 'package.json', data: `${JSON.stringify({ name: 'apprentice', version })}\n` },
    { path: 'bin/apprentice-edge.js', data: '#!/usr/bin/env node\nimport(process.env.FAKE_AGENT_MAIN);\n', mode: 0o755 },
    { path: 'behavior', data: `${behavior}\n` },
    filler,
  ];
}

/** Writes `files` under `dir` (directories created). */
export function writeBundleFiles(dir: string, files: readonly BundleFile[]): void {
  for (const f of files) {
    mkdirSync(join(dir, f.path, '..'), { recursive: true });
    writeFileSync(join(dir, f.path), f.data, { mode: f.mode ?? 0o644 });
  }
}

export interface FakeAgentPrefix {
  prefix: string;
  /** `<prefix>/opt/apprentice`: the installed bundle and `launcher.sh`. */
  app: string;
  /** `<prefix>/var/lib/apprentice` (created, empty). */
  data: string;
  /** Maps the unit file's absolute paths (and /usr/bin/node) into the prefix, for runService's `map`. */
  map: (cmd: string) => string;
}

/** A new `--prefix` root (under the system temp dir) with `files` installed as the running version and the real launcher beside them. */
export function fakeAgentPrefix(files: readonly BundleFile[], name = 'apprentice-agent-'): FakeAgentPrefix {
  const prefix = mkdtempSync(join(tmpdir(), name));
  const app = join(prefix, 'opt/apprentice');
  const data = join(prefix, 'var/lib/apprentice');
  writeBundleFiles(app, files);
  copyFileSync(AGENT_LAUNCHER, join(app, 'launcher.sh'));
  mkdirSync(data, { recursive: true });
  const map = (cmd: string): string => cmd.replaceAll('/opt/apprentice', app).replaceAll('/var/lib/apprentice', data).replaceAll('/usr/bin/node', process.execPath);
  return { prefix, app, data, map };
}
