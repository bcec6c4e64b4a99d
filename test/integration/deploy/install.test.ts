/**
 * deploy/install-edge.sh against a staging root (--prefix) and a small fake app (--source), so no
 * apt, systemctl, user creation or real node_modules are involved.
 */
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { findExecutable } from '../../helpers/broker.js';

const DEPLOY = fileURLToPath(new URL('../../../deploy/', import.meta.url));
const SCRIPT = path.join(DEPLOY, 'install-edge.sh');

let work: string;
let src: string;

function run(args: string[], env: NodeJS.ProcessEnv = {}) {
  const r = spawnSync('bash', [SCRIPT, ...args], {
    encoding: 'utf8',
    // zero-dependency fake app: npm ci needs no network
    env: { ...process.env, npm_config_offline: 'true', npm_config_update_notifier: 'false', ...env },
    timeout: 60_000,
  });
  return { status: r.status, out: `${r.stdout}${r.stderr}` };
}

function mode(p: string): string {
  return (statSync(p).mode & 0o7777).toString(8).padStart(4, '0');
}

function write(p: string, text: string, fileMode?: number): void {
  mkdirSync(path.dirname(p), { recursive: true });
  writeFileSync(p, text, fileMode === undefined ? undefined : { mode: fileMode });
}

/**
 * A built app in miniature: the edge entry imports an edge module, which imports `withDep` (a package in
 * node_modules) or nothing; a cloud module and a cloud-only package sit beside them and must not be
 * installed. `prepare` fails on purpose: the installer must not run it.
 */
function makeSource(dir: string, { withDep = false } = {}): void {
  const deps = withDep ? { 'some-dep': '1.0.0', 'cloud-only-dep': '1.0.0' } : {};
  write(path.join(dir, 'package.json'), JSON.stringify({ name: 'fake-apprentice', version: '0.0.1', type: 'module', scripts: { prepare: 'exit 97' }, dependencies: deps }));
  const lockPkgs: Record<string, unknown> = { '': { name: 'fake-apprentice', version: '0.0.1', dependencies: deps } };
  if (withDep) {
    lockPkgs['node_modules/some-dep'] = { version: '1.0.0', dependencies: { 'dep-of-dep': '1.0.0' } };
    lockPkgs['node_modules/dep-of-dep'] = { version: '1.0.0' };
    lockPkgs['node_modules/cloud-only-dep'] = { version: '1.0.0' };
  }
  write(path.join(dir, 'package-lock.json'), JSON.stringify({ name: 'fake-apprentice', version: '0.0.1', lockfileVersion: 3, requires: true, packages: lockPkgs }));
  write(path.join(dir, '.npmrc'), 'onnxruntime-node-install=skip\n');
  write(path.join(dir, 'bin/apprentice.js'), "#!/usr/bin/env node\nimport('../dist/bin/main.js');\n", 0o755);
  write(path.join(dir, 'bin/apprentice-edge.js'), "#!/usr/bin/env node\nimport('../dist/bin/edge.js');\n", 0o755);
  write(path.join(dir, 'dist/bin/edge.js'), "import { run } from '../edge/run.js';\nrun();\n");
  write(path.join(dir, 'dist/edge/run.js'), `${withDep ? "import dep from 'some-dep';\n" : ''}export function run() { console.log('fake edge'); }\n`);
  write(path.join(dir, 'dist/bin/main.js'), "import '../cloud/server.js';\n");
  write(path.join(dir, 'dist/cloud/server.js'), "import 'cloud-only-dep';\n");
  write(path.join(dir, 'dist/edge/old-module.js'), '// not imported: not installed\n');
  for (const d of ['some-dep', 'dep-of-dep', 'cloud-only-dep']) write(path.join(dir, `node_modules/${d}/index.js`), 'export default 1;\n');
}

beforeAll(() => {
  work = mkdtempSync(path.join(tmpdir(), 'apprentice-install-'));
  src = path.join(work, 'src');
  makeSource(src);
});

afterAll(() => rmSync(work, { recursive: true, force: true }));

describe('deploy/install-edge.sh', () => {
  it('is valid bash', () => {
    const r = spawnSync('bash', ['-n', SCRIPT], { encoding: 'utf8' });
    expect(r.stderr).toBe('');
    expect(r.status).toBe(0);
  });

  it('passes shellcheck', (ctx) => {
    const sc = findExecutable('shellcheck');
    if (!sc) {
      console.warn('[install] skipping shellcheck: not installed (apt-get install shellcheck)');
      ctx.skip('shellcheck not installed');
    }
    const r = spawnSync(sc!, ['-x', SCRIPT], { encoding: 'utf8' });
    expect(r.stdout + r.stderr).toBe('');
    expect(r.status).toBe(0);
  });

  it('prints help, and rejects unknown options and --purge without --uninstall', () => {
    const help = run(['--help']);
    expect(help.status).toBe(0);
    for (const flag of ['--prefix', '--uninstall', '--purge', '--config', '--source', '--no-start', '--skip-npm']) expect(help.out).toContain(flag);
    const bad = run(['--frobnicate']);
    expect(bad.status).toBe(2);
    expect(bad.out).toMatch(/unknown option --frobnicate/);
    expect(run(['--purge', '--prefix', path.join(work, 'x')]).status).toBe(1);
  });

  it('installs idempotently, never clobbers the config, and uninstalls keeping config and data', () => {
    const root = path.join(work, 'root');
    const cfg = path.join(work, 'edge.json');
    write(cfg, JSON.stringify({ version: 1, deviceId: 'pi-kitchen' }));
    const app = path.join(root, 'opt/apprentice');
    const conf = path.join(root, 'etc/apprentice/edge.json');
    const data = path.join(root, 'var/lib/apprentice');
    const unit = path.join(root, 'etc/systemd/system/apprentice-edge.service');

    // 1st run: real `npm install --omit=dev` of the zero-dependency app.
    const first = run(['--prefix', root, '--source', src, '--config', cfg]);
    expect(first.status, first.out).toBe(0);
    expect(first.out).toMatch(/not creating system user 'apprentice'/);
    expect(first.out).toMatch(/not running systemctl: --prefix is set/);
    expect(first.out).toMatch(/npm install --omit=dev/);
    for (const f of ['package.json', 'package-lock.json', '.npmrc', 'bin/apprentice-edge.js', 'dist/bin/edge.js', 'dist/edge/run.js']) {
      expect(existsSync(path.join(app, f)), f).toBe(true);
    }
    // Only what the edge entry imports: no cloud module, no full CLI, no unimported file.
    for (const f of ['bin/apprentice.js', 'dist/bin/main.js', 'dist/cloud', 'dist/edge/old-module.js', 'node_modules/some-dep']) expect(existsSync(path.join(app, f)), f).toBe(false);
    const pkg = JSON.parse(readFileSync(path.join(app, 'package.json'), 'utf8')) as { name: string; scripts?: unknown; dependencies: unknown; bin: unknown };
    expect(pkg).toMatchObject({ name: 'apprentice-edge', dependencies: {}, bin: { 'apprentice-edge': 'bin/apprentice-edge.js' } });
    expect(pkg.scripts).toBeUndefined(); // prepare (tsc) never runs on a device
    expect(mode(path.join(app, 'bin/apprentice-edge.js'))).toBe('0755');
    // The fixed launcher of agent updates (issue 14) ships with the app.
    expect(readFileSync(path.join(app, 'launcher.sh'), 'utf8')).toBe(readFileSync(path.join(DEPLOY, 'apprentice-launcher.sh'), 'utf8'));
    expect(mode(path.join(app, 'launcher.sh'))).toBe('0755');
    expect(mode(path.join(app, 'dist/bin/edge.js'))).toBe('0644');
    expect(readFileSync(conf, 'utf8')).toBe(readFileSync(cfg, 'utf8'));
    expect(mode(conf)).toBe('0640');
    expect(mode(path.dirname(conf))).toBe('0750');
    expect(mode(data)).toBe('0750');
    // Under --prefix the unit is copied verbatim (paths are the device's, not the staging root's).
    expect(readFileSync(unit, 'utf8')).toBe(readFileSync(path.join(DEPLOY, 'systemd/apprentice-edge.service'), 'utf8'));
    expect(mode(unit)).toBe('0644');

    // The admin edits the config; the device wrote data; the next release drops a module.
    write(conf, '{"version":1,"deviceId":"edited-by-hand"}\n');
    write(path.join(data, 'outbox.db'), 'rows');
    // An agent update had switched the device to a version in the data dir: the reinstall takes over.
    mkdirSync(path.join(data, 'agent/2.0.0'), { recursive: true });
    symlinkSync('2.0.0', path.join(data, 'agent/current'));
    write(path.join(data, 'agent/marker'), 'v=1\n');
    write(path.join(src, 'dist/edge/run.js'), "export function run() { console.log('fake edge 2'); }\n");
    const other = path.join(work, 'other.json');
    write(other, '{"version":1,"deviceId":"other"}');

    const second = run(['--prefix', root, '--source', src, '--config', other, '--skip-npm']);
    expect(second.status, second.out).toBe(0);
    expect(second.out).toMatch(/switching back to the installed/);
    expect(existsSync(path.join(data, 'agent/current'))).toBe(false);
    expect(existsSync(path.join(data, 'agent/marker'))).toBe(false);
    expect(existsSync(path.join(data, 'agent/2.0.0'))).toBe(true); // pruned by the next update, not here
    expect(second.out).toMatch(/keeping existing .*edge\.json/);
    expect(second.out).toMatch(/--config .*other\.json not applied/);
    expect(second.out).toMatch(/apprentice-edge\.service unchanged/);
    expect(readFileSync(conf, 'utf8')).toBe('{"version":1,"deviceId":"edited-by-hand"}\n');
    expect(mode(conf)).toBe('0640');
    expect(readFileSync(path.join(data, 'outbox.db'), 'utf8')).toBe('rows');
    expect(readFileSync(path.join(app, 'dist/edge/run.js'), 'utf8')).toContain('fake edge 2'); // replaced, not merged
    expect(existsSync(path.join(app, 'package-lock.json'))).toBe(false); // --skip-npm: nothing from the first run's npm
    expect(readdirSync(path.join(root, 'opt'))).toEqual(['apprentice']); // no staging or .old leftovers
    expect(readdirSync(path.dirname(conf))).toEqual(['edge.json']);

    const un = run(['--prefix', root, '--uninstall']);
    expect(un.status, un.out).toBe(0);
    expect(existsSync(app)).toBe(false);
    expect(existsSync(unit)).toBe(false);
    expect(readFileSync(conf, 'utf8')).toContain('edited-by-hand');
    expect(existsSync(path.join(data, 'outbox.db'))).toBe(true);
    expect(run(['--prefix', root, '--uninstall']).status).toBe(0); // nothing left to remove: still fine

    const purge = run(['--prefix', root, '--uninstall', '--purge']);
    expect(purge.status, purge.out).toBe(0);
    expect(existsSync(path.dirname(conf))).toBe(false);
    expect(existsSync(data)).toBe(false);
  });

  it('writes a config template when none is given, and lets --config replace it while untouched', () => {
    const root = path.join(work, 'root-template');
    const conf = path.join(root, 'etc/apprentice/edge.json');
    const r = run(['--prefix', root, '--source', src, '--skip-npm']);
    expect(r.status, r.out).toBe(0);
    expect(r.out).toMatch(/wrote a template/);
    const template = JSON.parse(readFileSync(conf, 'utf8')) as { deviceId: string; dataDir: string };
    expect(template.deviceId).toMatch(/CHANGE-ME/);
    expect(template.dataDir).toBe('/var/lib/apprentice');
    expect(mode(conf)).toBe('0640');

    const cfg = path.join(work, 'real.json');
    write(cfg, '{"version":1,"deviceId":"pi-garage"}');
    const r2 = run(['--prefix', root, '--source', src, '--skip-npm', '--config', cfg]);
    expect(r2.status, r2.out).toBe(0);
    expect(readFileSync(conf, 'utf8')).toBe('{"version":1,"deviceId":"pi-garage"}');
    expect(mode(conf)).toBe('0640');
  });

  it('--copy-node-modules copies the packages the edge imports and their dependencies, nothing else', () => {
    const withDep = path.join(work, 'src-dep');
    makeSource(withDep, { withDep: true });
    const root = path.join(work, 'root-bundle');
    const r = run(['--prefix', root, '--source', withDep, '--copy-node-modules']);
    expect(r.status, r.out).toBe(0);
    const app = path.join(root, 'opt/apprentice');
    expect(readdirSync(path.join(app, 'node_modules')).sort()).toEqual(['dep-of-dep', 'some-dep']);
    expect(JSON.parse(readFileSync(path.join(app, 'package.json'), 'utf8'))).toMatchObject({ dependencies: { 'some-dep': '1.0.0' } });
    const ran = spawnSync(process.execPath, [path.join(app, 'bin/apprentice-edge.js')], { encoding: 'utf8' });
    expect(ran.stdout).toBe('fake edge\n');
  });

  it('refuses an unbuilt source or an invalid --config without installing anything', () => {
    const unbuilt = path.join(work, 'unbuilt');
    makeSource(unbuilt);
    rmSync(path.join(unbuilt, 'dist'), { recursive: true });
    const root = path.join(work, 'root-fail');
    const r = run(['--prefix', root, '--source', unbuilt, '--skip-npm']);
    expect(r.status).toBe(1);
    expect(r.out).toMatch(/not built .*npm run build/);
    expect(existsSync(path.join(root, 'opt/apprentice'))).toBe(false);

    const bad = path.join(work, 'bad.json');
    write(bad, '{ not json');
    const r2 = run(['--prefix', root, '--source', src, '--skip-npm', '--config', bad]);
    expect(r2.status).toBe(1);
    expect(r2.out).toMatch(/not valid JSON/);
    expect(existsSync(path.join(root, 'opt/apprentice'))).toBe(false);
    expect(existsSync(path.join(root, 'etc/apprentice/edge.json'))).toBe(false);
  });
});
