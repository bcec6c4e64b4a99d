import { UsageError } from '../../shared/cli/errors.js';

/** Backend names the CLI accepts; kept free of tfjs imports so commands can parse flags cheaply. */
export const BACKEND_CHOICES = ['auto', 'tensorflow', 'wasm', 'cpu'] as const;
export type BackendChoice = (typeof BACKEND_CHOICES)[number];

export function parseBackendChoice(value: string): BackendChoice {
  if ((BACKEND_CHOICES as readonly string[]).includes(value)) return value as BackendChoice;
  throw new UsageError(`--backend: expected one of ${BACKEND_CHOICES.join(', ')}, got "${value}"`);
}
