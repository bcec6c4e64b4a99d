import cliProgress from 'cli-progress';
import { Command } from 'commander';
import { z } from 'zod';
import { ApiClient, addApiOptions, apiClientFromFlags } from '../../shared/cli/api-client.js';
import { UsageError, parseNumber, parsePositiveInt } from '../../shared/cli/errors.js';
import { DEVICE_ID_RE } from '../../shared/protocol/topics.js';
import { ROLLOUT_DEVICE_STATES } from './policy.js';
import { isShadowRunId, shadowFlags, shadowOption, shadowRunSchema, shadowSummary } from './cli-shadow.js';

/** What the CLI reads of `GET /v1/rollouts/{id}` (loose: a newer cloud may add fields). */
const rolloutSchema = z.object({
  id: z.string(),
  model: z.string(),
  kind: z.string().optional(),
  release: z.number(),
  state: z.string(),
  reason: z.string().nullable(),
  wave: z.number().int(),
  waves: z.array(z.number()),
  paused: z.boolean(),
  pauseReason: z.string().nullable(),
  securityAlert: z.string().nullable(),
  /** Agreement gate margin (issue 13); absent from an older cloud. */
  agreementMargin: z.number().optional(),
  counts: z.record(z.string(), z.number()).optional(),
  waveProgress: z.array(z.object({ share: z.number(), counts: z.record(z.string(), z.number()) })).optional(),
});
type Rollout = z.infer<typeof rolloutSchema>;

const ACTIVE = ['pending', 'canary', 'fleet', 'rolling_back'];
const PENDING = ['waiting', 'desired'];

export interface RolloutCliOptions {
  /** Tests: answer through the app in-process. */
  fetchImpl?: typeof fetch;
  /** Tests: a progress stream other than stderr. */
  stream?: NodeJS.WritableStream;
}

/** `all`, `group:NAME` or `devices:ID,ID,...` → the API's target. */
export function parseTarget(value: string): unknown {
  if (value === 'all') return 'all';
  const [kind, rest] = [value.slice(0, value.indexOf(':')), value.slice(value.indexOf(':') + 1)];
  if (kind === 'group' && rest) return { group: rest };
  if (kind === 'devices' && rest) {
    const ids = rest.split(',');
    const bad = ids.find((id) => !DEVICE_ID_RE.test(id));
    if (bad !== undefined) throw new UsageError(`--target: invalid device id "${bad}"`);
    return { devices: ids };
  }
  throw new UsageError(`--target: expected all, group:NAME or devices:ID,ID..., got "${value}"`);
}

/** `0.01,0.1,0.5,1` → numbers; the API checks the rest (increasing, ending at 1). */
export function parseWaves(value: string): number[] {
  return value.split(',').map((s) => parseNumber('--waves', s.trim(), { min: 0, max: 1 }));
}

function summary(r: Rollout): string {
  const order = (s: string) => (ROLLOUT_DEVICE_STATES as readonly string[]).indexOf(s) >>> 0;
  const counts = Object.entries(r.counts ?? {}).filter(([, n]) => n > 0).sort(([a], [b]) => order(a) - order(b)).map(([s, n]) => `${n} ${s}`).join(', ');
  const what = r.kind === 'agent' ? `${r.model} agentSeq ${r.release}` : `model ${r.model} release ${r.release}`;
  const lines = [`rollout ${r.id}: ${what}, ${r.state}${ACTIVE.includes(r.state) ? ` (wave ${r.wave + 1}/${r.waves.length})` : ''}${r.reason ? ` — ${r.reason}` : ''}`, `  devices: ${counts || 'none'}`];
  if (r.paused) lines.push(`  paused: ${r.pauseReason}`);
  if (r.securityAlert) lines.push(`  security alert: ${r.securityAlert}`);
  return lines.join('\n') + '\n';
}

/**
 * Polls the rollout until it leaves the active states, with one progress bar per wave (settled devices of
 * the wave). Resolves with the final rollout.
 */
async function waitFor(api: ApiClient, id: string, intervalMs: number, stream: NodeJS.WritableStream): Promise<Rollout> {
  const multi = new cliProgress.MultiBar(
    { format: '{label} [{bar}] {value}/{total} settled | {detail}', stream: stream as NodeJS.WriteStream, hideCursor: true, noTTYOutput: true, notTTYSchedule: 10_000 },
    cliProgress.Presets.legacy,
  );
  const bars: cliProgress.SingleBar[] = [];
  let lastPause: string | null = null;
  try {
    for (;;) {
      const r = await api.request('GET', `v1/rollouts/${encodeURIComponent(id)}`, { schema: rolloutSchema });
      (r.waveProgress ?? []).forEach((w, i) => {
        const total = Object.values(w.counts).reduce((a, b) => a + b, 0);
        const settled = Object.entries(w.counts).filter(([s]) => !PENDING.includes(s)).reduce((a, [, n]) => a + n, 0);
        const detail = Object.entries(w.counts).filter(([s, n]) => n > 0 && !PENDING.includes(s)).map(([s, n]) => `${n} ${s}`).join(', ') || (i <= r.wave ? 'started' : 'not started');
        const payload = { label: `wave ${i + 1} (${Math.round(w.share * 100)}%)`, detail };
        if (!bars[i]) bars[i] = multi.create(Math.max(total, 1), settled, payload);
        bars[i]!.setTotal(Math.max(total, 1));
        bars[i]!.update(settled, payload);
      });
      if (r.paused && r.pauseReason !== lastPause) multi.log(`paused: ${r.pauseReason}\n`);
      lastPause = r.paused ? r.pauseReason : null;
      if (!ACTIVE.includes(r.state)) return r;
      await new Promise((res) => setTimeout(res, intervalMs));
    }
  } finally {
    multi.stop();
  }
}

/** After `--wait`: exit 1 unless the rollout completed (or was superseded by a newer one). */
function finish(r: Rollout, json: boolean): void {
  process.stdout.write(json ? JSON.stringify(r, null, 2) + '\n' : summary(r));
  if (!['completed', 'superseded'].includes(r.state)) {
    process.stderr.write(`rollout ${r.id} ended ${r.state}${r.reason ? `: ${r.reason}` : ''}\n`);
    process.exitCode = 1;
  }
}

/** `apprentice rollout create|status|pause|resume|abort|switch`, through the admin API. */
export function rolloutCommand(o: RolloutCliOptions = {}): Command {
  const client = (f: { cloud: string; token?: string; tokenFile?: string }) => apiClientFromFlags(f, { fetchImpl: o.fetchImpl });
  const stream = o.stream ?? process.stderr;
  const cmd = new Command('rollout').description('Roll a release out to the fleet in waves, and watch, pause, resume or abort it (admin API)');
  const api = (sub: Command) => addApiOptions(sub).option('--json', 'print the rollout as JSON', false);

  cmd.addCommand(
    api(new Command('create'))
      .alias('start')
      .description('Start a rollout: the first wave (canaries) gets the release, each next wave after a healthy soak. With --shadow, devices first run it beside their model for that many minutes; the rollout starts at the switch')
      .option('--model <name>', 'model name (a model rollout, with --release)')
      .option('--release <seq>', 'release sequence number', (v) => parsePositiveInt('--release', v))
      .option('--agent <version>', 'roll out an agent release (`apprentice agent push`) instead, with --platform')
      .option('--platform <p>', 'the agent release platform: linux-x64 or linux-arm64 (with --agent)')
      .option('--target <target>', 'all, group:NAME or devices:ID,ID,...', 'all')
      .option('--waves <shares>', 'cumulative shares per wave, e.g. 0.01,0.1,0.5,1 (default 0.1,1)', parseWaves)
      .option('--canary-share <s>', 'the same as --waves S,1', (v) => parseNumber('--canary-share', v, { min: 0, max: 1 }))
      .option('--soak <seconds>', 'healthy time per wave before the next', (v) => parsePositiveInt('--soak', v))
      .option('--device-timeout <seconds>', 'a device not settled by then is timed_out (default 3600)', (v) => parsePositiveInt('--device-timeout', v))
      .option('--failure-threshold <share>', 'roll back at max(min-failures, share × settled) failures (default 0.2)', (v) => parseNumber('--failure-threshold', v, { min: 0, max: 1 }))
      .option('--min-failures <n>', 'default 2', (v) => parsePositiveInt('--min-failures', v))
      .option('--canary-grace <seconds>', 'replace a canary offline this long (default 300)', (v) => parsePositiveInt('--canary-grace', v))
      .option('--agreement-margin <share>', 'hold a device back when the 95% upper bound of candidate − running accuracy on its audit traffic is below −share (default 0.01; 1 turns the gate off)', (v) => parseNumber('--agreement-margin', v, { min: 0, max: 1 }))
      .option('--shadow <minutes>', 'on-device shadow mode first: devices run the release beside their model this long and report agreement (needs the manifest.shadow capability)', shadowFlags.minutes)
      .option('--shadow-min-agreement <share>', 'with --shadow: switch at the end when every device with enough examples agrees this often (default 0.95)', shadowFlags.agreement)
      .option('--shadow-min-requests <n>', 'with --shadow: examples a device must shadow to count (default 50)', shadowFlags.requests)
      .option('--no-auto-switch', 'with --shadow: never switch by itself; only `rollout switch ID`')
      .option('--wait', 'follow it with a progress bar per wave until it ends (exit 1 unless completed)', false)
      .option('--interval <ms>', 'poll interval with --wait', (v) => parsePositiveInt('--interval', v), 2000)
      .addHelpText('after', '\nExamples:\n  apprentice rollout create --cloud http://127.0.0.1:8787 --token-file DATA/admin-token --model digits --release 7 --waves 0.01,0.1,0.5,1 --soak 600 --wait\n  apprentice rollout create --cloud http://127.0.0.1:8787 --token-file DATA/admin-token --agent 0.2.0 --platform linux-x64 --waves 0.05,1 --wait\n  apprentice rollout start --cloud http://127.0.0.1:8787 --token-file DATA/admin-token --model digits --release 7 --shadow 60')
      .action(async (f) => {
        if (f.waves && f.canaryShare !== undefined) throw new UsageError('give either --waves or --canary-share, not both');
        if (f.agent !== undefined && (f.model !== undefined || f.release !== undefined)) throw new UsageError('give either --agent and --platform, or --model and --release, not both');
        if (f.agent === undefined && (f.model === undefined || f.release === undefined)) throw new UsageError('give --model and --release (a model rollout), or --agent VERSION --platform P');
        if (f.agent !== undefined && f.platform === undefined) throw new UsageError('--agent needs --platform (linux-x64 or linux-arm64)');
        const shadow = shadowOption(f);
        if (!shadow && (f.shadowMinAgreement !== undefined || f.shadowMinRequests !== undefined || f.autoSwitch === false)) throw new UsageError('--shadow-min-agreement, --shadow-min-requests and --no-auto-switch need --shadow MINUTES');
        if (shadow && f.wait) throw new UsageError('--wait follows waves; a shadow run has none until its switch: watch it with `rollout status ID`');
        if (shadow && f.agent !== undefined) throw new UsageError('--shadow is for model releases, not --agent');
        const body = {
          ...(f.agent !== undefined ? { agent: { version: f.agent, platform: f.platform } } : { model: f.model, release: f.release }),
          target: parseTarget(f.target),
          ...(f.waves ? { waves: f.waves } : {}),
          ...(f.canaryShare !== undefined ? { canaryShare: f.canaryShare } : {}),
          ...(f.soak !== undefined ? { soakSeconds: f.soak } : {}),
          ...(f.deviceTimeout !== undefined ? { deviceTimeoutSeconds: f.deviceTimeout } : {}),
          ...(f.failureThreshold !== undefined ? { failureThreshold: f.failureThreshold } : {}),
          ...(f.minFailures !== undefined ? { minFailures: f.minFailures } : {}),
          ...(f.canaryGrace !== undefined ? { canaryGraceSeconds: f.canaryGrace } : {}),
          ...(f.agreementMargin !== undefined ? { agreementMargin: f.agreementMargin } : {}),
          ...(shadow ? { shadow } : {}),
        };
        const a = client(f);
        if (shadow) {
          const run = await a.request('POST', 'v1/rollouts', { json: body, schema: shadowRunSchema });
          return void process.stdout.write(f.json ? JSON.stringify(run, null, 2) + '\n' : `created ${shadowSummary(run)}`);
        }
        const created = await a.request('POST', 'v1/rollouts', { json: body, schema: rolloutSchema });
        if (!f.wait) return void process.stdout.write(f.json ? JSON.stringify(created, null, 2) + '\n' : `created ${summary(created)}`);
        finish(await waitFor(a, created.id, f.interval, stream), f.json);
      }),
  );

  cmd.addCommand(
    api(new Command('status'))
      .description('Show a rollout: state, wave, devices per state, pause reason and security alert')
      .argument('<id>', 'rollout id')
      .option('--wait', 'follow it until it ends (exit 1 unless completed)', false)
      .option('--interval <ms>', 'poll interval with --wait', (v) => parsePositiveInt('--interval', v), 2000)
      .action(async (id: string, f) => {
        const a = client(f);
        if (isShadowRunId(id)) {
          const run = await a.request('GET', `v1/rollouts/${encodeURIComponent(id)}`, { schema: shadowRunSchema });
          return void process.stdout.write(f.json ? JSON.stringify(run, null, 2) + '\n' : shadowSummary(run));
        }
        if (f.wait) return finish(await waitFor(a, id, f.interval, stream), f.json);
        const r = await a.request('GET', `v1/rollouts/${encodeURIComponent(id)}`, { schema: rolloutSchema });
        process.stdout.write(f.json ? JSON.stringify(r, null, 2) + '\n' : summary(r));
      }),
  );

  for (const [name, description, hasReason] of [
    ['pause', 'Pause a rollout: no new wave, no canary replacement, device timeouts stop', true],
    ['resume', 'Resume a paused rollout', false],
    ['abort', 'Abort a rollout where it is (devices keep what they run)', true],
  ] as const) {
    const sub = api(new Command(name)).description(description).argument('<id>', 'rollout id');
    if (hasReason) sub.option('--reason <text>', 'why (shown in the rollout and its log)');
    cmd.addCommand(
      sub.action(async (id: string, f) => {
        const json = hasReason && f.reason ? { reason: f.reason } : {};
        if (isShadowRunId(id)) {
          const run = await client(f).request('POST', `v1/rollouts/${encodeURIComponent(id)}/${name}`, { json, schema: shadowRunSchema });
          return void process.stdout.write(f.json ? JSON.stringify(run, null, 2) + '\n' : shadowSummary(run));
        }
        const r = await client(f).request('POST', `v1/rollouts/${encodeURIComponent(id)}/${name}`, { json, schema: rolloutSchema });
        process.stdout.write(f.json ? JSON.stringify(r, null, 2) + '\n' : summary(r));
      }),
    );
  }

  cmd.addCommand(
    api(new Command('switch'))
      .description("Switch a shadow run now, whatever its gate says: the release's bytes are re-issued at a new sequence and rolled out with the run's policy")
      .argument('<id>', 'shadow run id (shadow-…)')
      .option('--reason <text>', 'why (shown in the run)')
      .addHelpText('after', '\nExample:\n  apprentice rollout switch shadow-1a2b3c4d --cloud http://127.0.0.1:8787 --token-file DATA/admin-token')
      .action(async (id: string, f) => {
        if (!isShadowRunId(id)) throw new UsageError(`${id} is not a shadow run id (shadow-…)`);
        const run = await client(f).request('POST', `v1/rollouts/${encodeURIComponent(id)}/switch`, { json: f.reason ? { reason: f.reason } : {}, schema: shadowRunSchema });
        process.stdout.write(f.json ? JSON.stringify(run, null, 2) + '\n' : shadowSummary(run));
      }),
  );
  return cmd;
}
