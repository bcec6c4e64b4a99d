import type { Logger } from '../shared/log/index.js';
import type { Manifest } from '../shared/protocol/index.js';
import type { ModelHost } from './runtime/index.js';
import type { ModelHost as UpdatesHost } from './updates/index.js';

/**
 * Test-only crash points, honoured only under NODE_ENV=test: `APPRENTICE_TEST_PAUSE_AT=<point>:<release>`
 * sleeps `APPRENTICE_TEST_PAUSE_MS` (default 60 s) when the update pipeline activates that release, at
 * `activate` (the file is in its slot, no session loaded yet) or `switch` (the host serves the new model,
 * the update state on disk still names the old one). It logs `test/paused` so a test can kill -9 there.
 */
export function withTestPause(host: ModelHost, env: NodeJS.ProcessEnv, log: Logger): UpdatesHost {
  if (env.NODE_ENV !== 'test' || !env.APPRENTICE_TEST_PAUSE_AT) return host;
  const [point, rel] = env.APPRENTICE_TEST_PAUSE_AT.split(':');
  const release = Number(rel);
  const ms = Number(env.APPRENTICE_TEST_PAUSE_MS ?? 60_000);
  const pause = async (at: string, m: Manifest): Promise<void> => {
    if (point !== at || m.release !== release) return;
    log.warn({ at, release: m.release }, 'test/paused');
    await new Promise((r) => setTimeout(r, ms));
  };
  return {
    async activate(path: string, m: Manifest): Promise<void> {
      await pause('activate', m);
      await host.activate(path, m);
      await pause('switch', m);
    },
  };
}
