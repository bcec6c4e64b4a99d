import * as tf from '@tensorflow/tfjs';
import { UsageError } from '../../shared/cli/errors.js';
import { BACKEND_CHOICES, parseBackendChoice, type BackendChoice } from './choices.js';

export { BACKEND_CHOICES, parseBackendChoice, type BackendChoice };
import { installWasmConvGradKernels } from './wasm-conv-grad.js';
import { installWasmMatMulOverride } from './wasm-matmul.js';

export interface BackendInfo {
  /** The tfjs backend name in use: `tensorflow` (tfjs-node), `wasm` or `cpu`. */
  name: string;
  /** What the user asked for. */
  requested: BackendChoice;
  /** Why earlier choices were skipped, for the report. */
  fallbacks: string[];
  /** Whether the wasm transposed-matMul kernel override is active. */
  wasmMatMulOverride: boolean;
  /** Gradient kernels added to the wasm backend (conv students need them); empty on other backends. */
  wasmConvGradKernels: string[];
}

let current: BackendInfo | undefined;

async function tryTensorflow(): Promise<string | undefined> {
  try {
    // Optional dependency: its install downloads libtensorflow, which fails offline.
    await import('@tensorflow/tfjs-node' as string);
    if (await tf.setBackend('tensorflow')) return undefined;
    return 'tfjs-node loaded but the tensorflow backend did not initialise';
  } catch (err) {
    return `tfjs-node unavailable (${(err as Error).message.split('\n')[0]})`;
  }
}

async function tryWasm(): Promise<string | undefined> {
  try {
    await import('@tensorflow/tfjs-backend-wasm');
    if (!(await tf.setBackend('wasm'))) return 'wasm backend failed to initialise';
    return undefined;
  } catch (err) {
    return `wasm unavailable (${(err as Error).message.split('\n')[0]})`;
  }
}

/**
 * Selects the tfjs backend: tfjs-node if it loads, else wasm, else cpu. `choice` forces one.
 * Also honours `APPRENTICE_BACKEND`. Idempotent: later calls return the first result.
 */
export async function initBackend(choice: BackendChoice = (process.env.APPRENTICE_BACKEND as BackendChoice) ?? 'auto'): Promise<BackendInfo> {
  if (current) return current;
  const requested = parseBackendChoice(choice || 'auto');
  const fallbacks: string[] = [];
  const order: BackendChoice[] = requested === 'auto' ? ['tensorflow', 'wasm', 'cpu'] : [requested];
  let name: string | undefined;
  for (const b of order) {
    const why = b === 'tensorflow' ? await tryTensorflow() : b === 'wasm' ? await tryWasm() : (await tf.setBackend('cpu')) ? undefined : 'cpu failed';
    if (why === undefined) {
      name = b;
      break;
    }
    fallbacks.push(why);
  }
  if (!name) throw new UsageError(`--backend ${requested}: ${fallbacks.join('; ')}`);
  await tf.ready();
  const wasmMatMulOverride = name === 'wasm' && process.env.APPRENTICE_WASM_MATMUL_OVERRIDE !== '0' ? installWasmMatMulOverride() : false;
  const wasmConvGradKernels = name === 'wasm' ? installWasmConvGradKernels() : [];
  current = { name: tf.getBackend(), requested, fallbacks, wasmMatMulOverride, wasmConvGradKernels };
  return current;
}

export function backendInfo(): BackendInfo | undefined {
  return current;
}
