import { Command, Option } from 'commander';
import { z } from 'zod';
import { ApiClient, addApiOptions, apiClientFromFlags } from '../../shared/cli/api-client.js';
import { UsageError, parsePositiveInt } from '../../shared/cli/errors.js';
import { DEVICE_STATES } from './device-query.js';

/** What the CLI reads of the console routes (loose: a newer cloud may add fields). */
const deviceItem = z.object({
  id: z.string(),
  groups: z.array(z.string()),
  status: z.string(),
  lastSeen: z.string().nullable(),
  running: z.object({ model: z.string().nullable(), release: z.number() }).nullable(),
  desiredRelease: z.number().nullable(),
  health: z.string().nullable().optional(),
  attention: z.array(z.string()).optional(),
});
const devicePage = z.object({ devices: z.array(deviceItem), nextCursor: z.string().nullable(), total: z.number() });
const summarySchema = z.object({
  total: z.number(),
  online: z.number(),
  offline: z.number(),
  neverSeen: z.number(),
  revoked: z.number(),
  attention: z.number(),
  attentionBy: z.record(z.string(), z.number()),
  releases: z.array(z.object({ model: z.string(), release: z.number(), devices: z.number() })),
});
const roundItem = z.object({
  id: z.string(),
  model: z.string(),
  state: z.string(),
  trigger: z.string(),
  metrics: z.record(z.string(), z.unknown()).nullable(),
  error: z.string().nullable(),
  releaseSeq: z.number().nullable(),
  exampleCount: z.number().nullable(),
  startedAt: z.string().nullable(),
  finishedAt: z.string().nullable(),
  createdAt: z.string(),
});

export interface FleetCliOptions {
  /** Tests: answer through the app in-process. */
  fetchImpl?: typeof fetch;
}

type Flags = { cloud: string; token?: string; tokenFile?: string; json: boolean };

/** Columns padded to their widest cell; the last column is not padded. */
export function table(header: string[], rows: string[][]): string {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const line = (r: string[]) => r.map((c, i) => c.padEnd(widths[i]!)).join('  ').trimEnd();
  return [line(header), ...rows.map(line)].join('\n') + '\n';
}

const pct = (v: unknown): string => (typeof v === 'number' ? `${(v * 100).toFixed(1)}%` : '-');
const out = (s: string): void => void process.stdout.write(s);

/** Every page of `GET /v1/devices` (at most `max` devices). */
async function allDevices(api: ApiClient, query: Record<string, string | undefined>, max: number): Promise<{ devices: z.infer<typeof deviceItem>[]; total: number }> {
  const devices: z.infer<typeof deviceItem>[] = [];
  let cursor: string | undefined;
  let total = 0;
  do {
    const page = await api.request('GET', 'v1/devices', { query: { ...query, limit: Math.min(1000, max - devices.length), cursor }, schema: devicePage });
    devices.push(...page.devices);
    total = page.total;
    cursor = page.nextCursor ?? undefined;
  } while (cursor && devices.length < max);
  return { devices, total };
}

function devicesLs(o: FleetCliOptions): Command {
  return addApiOptions(new Command('ls'))
    .description('List devices: status, running vs desired release, health, why a device needs attention')
    .option('--group <name>', 'only devices in this group')
    .addOption(new Option('--state <state>', 'only devices in this state').choices([...DEVICE_STATES]))
    .option('--release <seq>', 'only devices running this release', (v) => String(parsePositiveInt('--release', v)))
    .option('-q, --search <text>', 'id or group contains this text (case-insensitive)')
    .option('--limit <n>', 'at most this many devices', (v) => parsePositiveInt('--limit', v), 1000)
    .option('--json', 'print the devices as JSON', false)
    .addHelpText('after', '\nExample:\n  apprentice devices ls --cloud http://127.0.0.1:8787 --token-file DATA/admin-token --state attention')
    .action(async (f: Flags & { group?: string; state?: string; release?: string; search?: string; limit: number }) => {
      if (f.search !== undefined && (f.search.length === 0 || f.search.length > 64)) throw new UsageError('--search: expected 1 to 64 characters');
      const api = apiClientFromFlags(f, { fetchImpl: o.fetchImpl });
      const { devices, total } = await allDevices(api, { group: f.group, state: f.state, release: f.release, q: f.search }, f.limit);
      if (f.json) return out(JSON.stringify({ devices, total }, null, 2) + '\n');
      const rows = devices.map((d) => [
        d.id,
        d.status,
        d.running ? `${d.running.model ?? '?'}@${d.running.release}` : '-',
        d.desiredRelease === null ? '-' : String(d.desiredRelease),
        d.health ?? '-',
        d.lastSeen ?? 'never',
        d.groups.join(',') || '-',
        d.attention?.join(',') || '',
      ]);
      out(table(['DEVICE', 'STATUS', 'RUNNING', 'DESIRED', 'HEALTH', 'LAST SEEN', 'GROUPS', 'ATTENTION'], rows));
      if (devices.length < total) out(`(${devices.length} of ${total}; raise --limit for more)\n`);
    });
}

function fleetStatus(o: FleetCliOptions): Command {
  return addApiOptions(new Command('status'))
    .description('Fleet overview: devices online / offline / needing attention, and devices per running release')
    .option('--json', 'print the summary as JSON', false)
    .addHelpText('after', '\nExample:\n  apprentice fleet status --cloud http://127.0.0.1:8787 --token-file DATA/admin-token')
    .action(async (f: Flags) => {
      const s = await apiClientFromFlags(f, { fetchImpl: o.fetchImpl }).request('GET', 'v1/fleet/summary', { schema: summarySchema });
      if (f.json) return out(JSON.stringify(s, null, 2) + '\n');
      const why = Object.entries(s.attentionBy).filter(([, n]) => n > 0).map(([k, n]) => `${n} ${k}`).join(', ');
      out(
        table(
          ['DEVICES', 'ONLINE', 'OFFLINE', 'NEVER SEEN', 'ATTENTION', 'REVOKED'],
          [[s.total, s.online, s.offline, s.neverSeen, s.attention, s.revoked].map(String)],
        ),
      );
      if (why) out(`attention: ${why}\n`);
      out('\n' + (s.releases.length ? table(['MODEL', 'RELEASE', 'DEVICES'], s.releases.map((r) => [r.model, String(r.release), String(r.devices)])) : 'no device runs a release yet\n'));
    });
}

function roundsLs(o: FleetCliOptions): Command {
  return addApiOptions(new Command('ls'))
    .description("Distillation rounds, newest first: state, released sequence, student vs teacher holdout accuracy, agreement, the gate's reason")
    .option('--model <name>', 'only this model (default: every model)')
    .option('--limit <n>', 'at most this many rounds', (v) => parsePositiveInt('--limit', v), 20)
    .option('--json', 'print the rounds as JSON', false)
    .addHelpText('after', '\nExample:\n  apprentice rounds ls --cloud http://127.0.0.1:8787 --token-file DATA/admin-token --model digits')
    .action(async (f: Flags & { model?: string; limit: number }) => {
      const api = apiClientFromFlags(f, { fetchImpl: o.fetchImpl });
      const names = f.model !== undefined ? [f.model] : (await api.request('GET', 'v1/models', { schema: z.object({ models: z.array(z.object({ name: z.string() })) }) })).models.map((m) => m.name);
      const per = await Promise.all(names.map((n) => api.request('GET', `v1/models/${encodeURIComponent(n)}/rounds`, { schema: z.object({ rounds: z.array(roundItem) }) })));
      const rounds = per
        .flatMap((p) => p.rounds)
        .sort((a, b) => b.createdAt.localeCompare(a.createdAt))
        .slice(0, f.limit);
      if (f.json) return out(JSON.stringify({ rounds }, null, 2) + '\n');
      const rows = rounds.map((r) => {
        const m = r.metrics ?? {};
        const gate = (m.gate as { pass?: boolean; reason?: string } | undefined) ?? undefined;
        return [
          r.id,
          r.model,
          r.state,
          r.releaseSeq === null ? '-' : String(r.releaseSeq),
          pct(m.holdoutAccuracy),
          pct(m.teacherHoldoutAccuracy),
          pct(m.holdoutAgreement),
          pct(m.hardAgreement),
          r.exampleCount === null ? '-' : String(r.exampleCount),
          r.createdAt,
          r.error ?? (gate && !gate.pass ? (gate.reason ?? 'gate refused') : ''),
        ];
      });
      out(rounds.length ? table(['ROUND', 'MODEL', 'STATE', 'RELEASE', 'STUDENT', 'TEACHER', 'AGREEMENT', 'HARD AGR', 'EXAMPLES', 'CREATED', 'NOTE'], rows) : 'no rounds\n');
    });
}

/** `apprentice devices ls`: the console's device list in a terminal (admin API). */
export function devicesCommand(o: FleetCliOptions = {}): Command {
  return new Command('devices').description('The fleet\'s devices (admin API)').addCommand(devicesLs(o));
}

/** `apprentice fleet status`: the console's overview in a terminal (admin API). */
export function fleetCommand(o: FleetCliOptions = {}): Command {
  return new Command('fleet').description('The fleet at a glance (admin API)').addCommand(fleetStatus(o));
}

/** `apprentice rounds ls`: distillation rounds of every model (admin API). */
export function roundsCommand(o: FleetCliOptions = {}): Command {
  return new Command('rounds').description('Distillation rounds (admin API)').addCommand(roundsLs(o));
}
