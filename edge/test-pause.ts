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
  if (env.NODE_ENV !== 'test') return host;
  if (env.APPRENTICE_TEST_CRASH_AT) return withTestCrash(host, env.APPRENTICE_TEST_CRASH_AT, log);
  if (!env.APPRENTICE_TEST_PAUSE_AT) return host;
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

/**
 * `APPRENTICE_TEST_CRASH_AT=<activate|switch>:<release>` (NODE_ENV=test only): the process SIGKILLs itself
 * while loading that release (`activate`, as the OOM killer ends a model too big for the device) or just
 * after switching to it (`switch`, a model that crashes the runtime while serving). Crash-loop guard tests.
 */
function withTestCrash(host: ModelHost, spec: string, log: Logger): UpdatesHost {
  const [point, rel] = spec.split(':');
  const release = Number(rel);
  const crash = (at: string, m: Manifest): void => {
    if (point !== at || m.release !== release) return;
    log.warn({ at, release: m.release }, 'test/crashing');
    process.kill(process.pid, 'SIGKILL');
  };
  return {
    async activate(path: string, m: Manifest): Promise<void> {
      crash('activate', m);
      await host.activate(path, m);
      crash('switch', m);
    },
  };
}
