import { execFileSync } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import * as tf from '@tensorflow/tfjs';
import type { KernelConfig } from '@tensorflow/tfjs';
import { WASM_CONV_GRAD_KERNELS, WASM_REPLACED_KERNELS } from '../../cloud/tf/wasm-conv-grad.js';

/**
 * Before/after in one process for the conv-training bench: the wasm gradient kernels of this checkout
 * and those of an earlier commit (its cloud/tf/wasm-conv-grad.ts, read with `git show` into .cache/bench
 * and imported, so run with `node --import tsx`) are each installed once on the stock wasm kernels and
 * snapshotted; `activate` swaps a whole set in. Everything else (model, data, batching, loss) is shared.
 */
const NAMES = [...new Set<string>([...WASM_CONV_GRAD_KERNELS, ...WASM_REPLACED_KERNELS, 'Conv2DBackpropInput', 'MaxPoolGrad'])];
const PATCHED = Symbol.for('apprentice.wasmConvGradPatched');

type Snapshot = Map<string, KernelConfig | undefined>;
const snapshot = (): Snapshot => new Map(NAMES.map((n) => [n, tf.getKernel(n, 'wasm')]));
function restore(s: Snapshot): void {
  for (const n of NAMES) {
    if (tf.getKernel(n, 'wasm')) tf.unregisterKernel(n, 'wasm');
    const k = s.get(n);
    if (k) tf.registerKernel(k);
  }
}

/**
 * The baseline commit's kernel module: its cloud/tf/wasm-*.ts (the kernel modules import only each
 * other and tfjs) written to .cache/bench/wasm-kernels-<commit>/, where '@tensorflow/tfjs' resolves.
 */
export function baselineModule(commit: string): string {
  const git = (...args: string[]) => execFileSync('git', args, { encoding: 'utf8' });
  const files = git('ls-tree', '--name-only', `${commit}:cloud/tf`).split('\n').filter((f) => /^wasm-.*\.ts$/.test(f));
  if (!files.includes('wasm-conv-grad.ts')) throw new Error(`BENCH_BASELINE_COMMIT=${commit}: no cloud/tf/wasm-conv-grad.ts there`);
  const dir = resolve('.cache/bench', `wasm-kernels-${commit}`);
  mkdirSync(dir, { recursive: true });
  for (const f of files) writeFileSync(resolve(dir, f), git('show', `${commit}:cloud/tf/${f}`));
  return resolve(dir, 'wasm-conv-grad.ts');
}

/** Loads an installer from a module file (e.g. `baselineModule`'s). */
export function installerFrom(file: string): () => Promise<string[]> {
  return async () => ((await import(pathToFileURL(file).href)) as { installWasmConvGradKernels(): string[] }).installWasmConvGradKernels();
}

/**
 * Kernel sets by name, each installed once on the stock wasm kernels. Call right after
 * `tf.setBackend('wasm')`, before anything installs conv kernels.
 */
export async function convKernelSets(installers: Record<string, () => Promise<string[]>>): Promise<Record<string, () => void>> {
  const stock = snapshot();
  const sets: Record<string, () => void> = {};
  for (const [name, install] of Object.entries(installers)) {
    restore(stock);
    delete (globalThis as Record<symbol, unknown>)[PATCHED];
    const added = await install();
    if (!added.includes('Conv2DBackpropFilter')) throw new Error(`kernel set ${name}: installed ${added.join(', ') || 'nothing'}, not Conv2DBackpropFilter`);
    const s = snapshot();
    sets[name] = () => restore(s);
  }
  return sets;
}

export interface KernelTime {
  kernel: string;
  msPerStep: number;
  callsPerStep: number;
}

/**
 * Wraps every wasm kernel registered now with a timer (inclusive: a kernel that calls another counts
 * both); `stop` puts the unwrapped kernels back.
 */
export function kernelTimer(): { top(steps: number, n: number): KernelTime[]; stop(): void } {
  const times = new Map<string, { ms: number; calls: number }>();
  const originals = tf.getKernelsForBackend('wasm');
  for (const k of originals) {
    const inner = k.kernelFunc;
    tf.unregisterKernel(k.kernelName, 'wasm');
    tf.registerKernel({
      ...k,
      kernelFunc: (args) => {
        const s = performance.now();
        try {
          return inner(args);
        } finally {
          const e = times.get(k.kernelName) ?? { ms: 0, calls: 0 };
          e.ms += performance.now() - s;
          e.calls++;
          times.set(k.kernelName, e);
        }
      },
    });
  }
  return {
    top: (steps, n) =>
      [...times.entries()]
        .sort((a, b) => b[1].ms - a[1].ms)
        .slice(0, n)
        .map(([kernel, { ms, calls }]) => ({ kernel, msPerStep: +(ms / steps).toFixed(2), callsPerStep: +(calls / steps).toFixed(1) })),
    stop: () => {
      for (const k of originals) {
        tf.unregisterKernel(k.kernelName, 'wasm');
        tf.registerKernel(k);
      }
    },
  };
}
