/**
 * Runs a commander program in process the way bin/main.ts does (shared/cli/run.ts `runProgram`) and
 * captures what it writes to stdout and stderr, for CLI tests that talk to an in-process API through an
 * injected fetch. `process.exitCode` is put back afterwards.
 */
import type { Command } from 'commander';
import { vi } from 'vitest';
import { runProgram } from '../../shared/cli/run.js';

export interface CapturedRun {
  code: number;
  stdout: string;
  stderr: string;
}

/** `argv` without the `node apprentice` prefix (e.g. `['agent', 'push', file]`). */
export async function captureProgram(program: Command, argv: readonly string[]): Promise<CapturedRun> {
  let stdout = '';
  let stderr = '';
  const out = vi.spyOn(process.stdout, 'write').mockImplementation((c: string | Uint8Array) => ((stdout += String(c)), true));
  const err = vi.spyOn(process.stderr, 'write').mockImplementation((c: string | Uint8Array) => ((stderr += String(c)), true));
  const before = process.exitCode;
  try {
    const code = await runProgram(program, ['node', 'apprentice', ...argv]);
    return { code, stdout, stderr };
  } finally {
    process.exitCode = before;
    out.mockRestore();
    err.mockRestore();
  }
}
