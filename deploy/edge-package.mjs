#!/usr/bin/env node
// Stages the lean edge package (issue 9, item 7) from a built checkout: the files the edge entry
// (dist/bin/edge.js) really imports, a package.json whose dependencies are only the packages those
// files import (versions from the checkout's package.json), and, with --copy-node-modules, those
// packages' dependency closure (from package-lock.json) copied out of the checkout's node_modules.
// Used by deploy/install-edge.sh, which then removes what no device runs (other platforms'
// onnxruntime binaries, better-sqlite3's sources and build intermediates).
//
//   node deploy/edge-package.mjs --source DIR --out DIR [--copy-node-modules]
import { cpSync, existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { builtinModules } from 'node:module';
import { dirname, join, relative, resolve } from 'node:path';

const ENTRY = 'dist/bin/edge.js';
const LAUNCHER = 'bin/apprentice-edge.js';

function usage(msg) {
  process.stderr.write(`edge-package: ${msg}\nusage: edge-package.mjs --source DIR --out DIR [--copy-node-modules]\n`);
  process.exit(2);
}

function parseArgs(argv) {
  const o = { copy: false };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === '--source' || a === '--out') {
      if (!argv[i + 1]) usage(`${a} needs a value`);
      o[a.slice(2)] = argv[++i];
    } else if (a === '--copy-node-modules') o.copy = true;
    else if (a === '-h' || a === '--help') usage('help');
    else usage(`unknown option ${a}`);
  }
  if (!o.source) usage('--source is required');
  if (!o.out) usage('--out is required');
  return o;
}

const BUILTIN = new Set(builtinModules);
const IMPORT_RE = /(?:^|[\s;}])(?:import|export)\s[^'"`;]*?from\s*['"]([^'"]+)['"]|(?:^|[\s;(])import\s*['"]([^'"]+)['"]|import\(\s*['"]([^'"]+)['"]\s*\)/gm;

/** Relative files reachable from the entry, and the bare packages they import. */
function importClosure(source) {
  const files = new Set();
  const packages = new Set();
  const todo = [join(source, ENTRY)];
  while (todo.length > 0) {
    const file = todo.pop();
    if (files.has(file)) continue;
    if (!existsSync(file)) throw new Error(`${relative(source, file)} is imported but missing (is the checkout built?)`);
    files.add(file);
    for (const m of readFileSync(file, 'utf8').matchAll(IMPORT_RE)) {
      const spec = m[1] ?? m[2] ?? m[3];
      if (spec.startsWith('.')) todo.push(resolve(dirname(file), spec));
      else if (!spec.startsWith('node:') && !BUILTIN.has(spec.split('/')[0])) packages.add(spec.startsWith('@') ? spec.split('/').slice(0, 2).join('/') : spec.split('/')[0]);
    }
  }
  return { files: [...files].map((f) => relative(source, f)).sort(), packages: [...packages].sort() };
}

/** The package dirs (`node_modules/...`) that `roots` need at run time, per npm's lockfile v2/v3 layout. */
function dependencyClosure(lock, roots) {
  const pkgs = lock.packages ?? {};
  const find = (from, name) => {
    // Node's lookup: nested node_modules first, then each parent's, then the top level.
    for (let dir = from; ; dir = dir.includes('/node_modules/') ? dir.slice(0, dir.lastIndexOf('/node_modules/')) : '') {
      const key = dir ? `${dir}/node_modules/${name}` : `node_modules/${name}`;
      if (pkgs[key]) return key;
      if (!dir) return undefined;
    }
  };
  const out = new Set();
  const todo = roots.map((n) => {
    const k = find('', n);
    if (!k) throw new Error(`package ${n} is not in package-lock.json`);
    return k;
  });
  while (todo.length > 0) {
    const key = todo.pop();
    if (out.has(key)) continue;
    out.add(key);
    const p = pkgs[key];
    for (const [name, optional] of [...Object.keys(p.dependencies ?? {}).map((n) => [n, false]), ...Object.keys(p.optionalDependencies ?? {}).map((n) => [n, true])]) {
      const k = find(key, name);
      if (k && !pkgs[k].dev) todo.push(k);
      else if (!k && !optional) throw new Error(`${key} needs ${name}, which is not in package-lock.json`);
    }
  }
  return [...out].sort();
}

const o = parseArgs(process.argv.slice(2));
const source = resolve(o.source);
const rootPkg = JSON.parse(readFileSync(join(source, 'package.json'), 'utf8'));
const { files, packages } = importClosure(source);
const unknown = packages.filter((p) => !rootPkg.dependencies?.[p]);
if (unknown.length > 0) {
  process.stderr.write(`edge-package: the edge code imports ${unknown.join(', ')}, not in ${join(source, 'package.json')} dependencies\n`);
  process.exit(1);
}
const pkg = {
  name: 'apprentice-edge',
  version: rootPkg.version,
  description: 'Apprentice edge daemon (lean install: the edge modules and their dependencies only)',
  type: 'module',
  private: true,
  license: rootPkg.license,
  engines: rootPkg.engines,
  bin: { 'apprentice-edge': LAUNCHER },
  dependencies: Object.fromEntries(packages.map((p) => [p, rootPkg.dependencies[p]])),
};
const lock = JSON.parse(readFileSync(join(source, 'package-lock.json'), 'utf8'));
const modules = o.copy ? dependencyClosure(lock, packages) : [];
const out = resolve(o.out);
mkdirSync(out, { recursive: true });
for (const f of [LAUNCHER, ...files]) {
  mkdirSync(dirname(join(out, f)), { recursive: true });
  cpSync(join(source, f), join(out, f));
}
writeFileSync(join(out, 'package.json'), `${JSON.stringify(pkg, null, 2)}\n`);
if (o.copy) {
  for (const m of modules) {
    if (!existsSync(join(source, m))) continue; // an optional dependency not installed on this machine
    cpSync(join(source, m), join(out, m), { recursive: true, verbatimSymlinks: true });
  }
}
process.stdout.write(`${JSON.stringify({ files: files.length + 1, dependencies: Object.keys(pkg.dependencies), packages: modules.length })}\n`);
