import type { Logger } from '../../shared/log/index.js';

/** The steps of an agent switch where `APPRENTICE_TEST_AGENT_KILL_AT` can SIGKILL the process (tests). */
export const SWITCH_STEPS = ['downloaded', 'unpacked', 'marker', 'link-tmp', 'link', 'floor', 'commit-marker'] as const;
export type SwitchStep = (typeof SWITCH_STEPS)[number];

/**
 * Test-only crash points, honoured only under NODE_ENV=test (like edge/test-pause.ts): the process
 * SIGKILLs itself at that step of an agent switch, as a power cut would.
 */
export function testKiller(env: NodeJS.ProcessEnv, log: Logger): (step: SwitchStep) => void {
  const at = env.NODE_ENV === 'test' ? env.APPRENTICE_TEST_AGENT_KILL_AT : undefined;
  if (!at) return () => undefined;
  return (step) => {
    if (step !== at) return;
    log.warn({ step }, 'test/killing');
    process.kill(process.pid, 'SIGKILL');
  };
}
