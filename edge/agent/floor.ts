import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { z } from 'zod';
import { formatIssues } from '../../shared/protocol/index.js';
import { writeFileAtomic } from '../updates/fsutil.js';

/**
 * The agent release floor (issue 14): the highest `agentSeq` this device ever switched to or refused
 * after a failed trial, in `<agent root>/agent-state.json`. Separate from the model release floor
 * (update-state.json): the two sequences are counted by different rollouts. Never lowered; a corrupt
 * file is an error, not a reset (a reset would let an old signed agent install again).
 */
export const AGENT_STATE_FILE = 'agent-state.json';

const schema = z.strictObject({ v: z.literal(1), highestAgentSeq: z.number().int().min(0).max(Number.MAX_SAFE_INTEGER) });

export class AgentFloorError extends Error {
  override readonly name = 'AgentFloorError';
}

export class AgentFloor {
  private constructor(
    private readonly path: string,
    private value: number,
  ) {}

  static async open(root: string): Promise<AgentFloor> {
    const path = join(root, AGENT_STATE_FILE);
    let text: string;
    try {
      text = await readFile(path, 'utf8');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return new AgentFloor(path, 0);
      throw err;
    }
    let json: unknown;
    try {
      json = JSON.parse(text);
    } catch {
      throw new AgentFloorError(`${path}: not JSON; refusing to reset the agent floor (inspect or delete it deliberately)`);
    }
    const r = schema.safeParse(json);
    if (!r.success) throw new AgentFloorError(`${path}: ${formatIssues(r.error)}; refusing to reset the agent floor`);
    return new AgentFloor(path, r.data.highestAgentSeq);
  }

  get highest(): number {
    return this.value;
  }

  /** Raises the floor durably to `seq` (no-op when already at or above it). */
  async raise(seq: number): Promise<void> {
    if (seq <= this.value) return;
    await writeFileAtomic(this.path, `${JSON.stringify({ v: 1, highestAgentSeq: seq })}\n`);
    this.value = seq;
  }
}
