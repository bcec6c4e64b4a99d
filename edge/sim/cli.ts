import { readFile } from 'node:fs/promises';
import { availableParallelism, tmpdir } from 'node:os';
import { join } from 'node:path';
import { Command } from 'commander';
import { UsageError, parsePositiveInt } from '../../shared/cli/errors.js';
import { parseShare } from './shares.js';
import type { TrustedKey } from '../../shared/manifest/index.js';

/** Reads trusted keys from a JSON array, an edge.json / provisioning bundle (`trustedKeys`), or a PEM public key. */
export async function readTrustedKeys(file: string): Promise<TrustedKey[]> {
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (err) {
    throw new UsageError(`--trusted-keys: cannot read ${file} (${(err as NodeJS.ErrnoException).code ?? (err as Error).message})`);
  }
  const { trustedKeyFromPem } = await import('../../shared/manifest/index.js');
  if (text.trimStart().startsWith('-----BEGIN PUBLIC KEY-----')) return [trustedKeyFromPem(text)];
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch {
    throw new UsageError(`--trusted-keys: ${file} is neither JSON nor a PEM public key`);
  }
  const list = Array.isArray(raw) ? raw : (raw as { trustedKeys?: unknown })?.trustedKeys;
  if (!Array.isArray(list) || list.length === 0) throw new UsageError(`--trusted-keys: ${file} has no keys (expected [{keyId, publicKeyPem}] or {trustedKeys: [...]})`);
  return list.map((k, i) => {
    const pem = (k as { publicKeyPem?: unknown })?.publicKeyPem;
    if (typeof pem !== 'string') throw new UsageError(`--trusted-keys: key ${i} has no publicKeyPem`);
    return trustedKeyFromPem(pem);
  });
}

interface SimOpts {
  devices: string;
  mqttUrl: string;
  dataDir?: string;
  trustedKeys?: string;
  cloud?: string;
  token?: string;
  prefix: string;
  group: string[];
  connectConcurrency: string;
  workers?: string;
  failSelfTest: string;
  neverConnect: string;
  switchedOff: string;
  agentRoot?: string;
  agentFailRate: string;
}

/**
 * `apprentice sim`: N simulated devices over worker processes (edge/sim/pool.ts), each running the real
 * edge update path (see edge/sim/device.ts), for fleet-scale tests and benches. Prints the installed
 * count as it changes and stops cleanly on SIGINT / SIGTERM.
 */
export function simCommand(): Command {
  return new Command('sim')
    .description('Simulate N edge devices over worker processes (real manifest verification, chunk fetch, install state machine, self-test, status and events)')
    .requiredOption('-n, --devices <n>', 'number of simulated devices')
    .requiredOption('--mqtt-url <url>', 'broker URL (mqtt://host:port)')
    .option('--data-dir <dir>', 'state of every device under <dir>/<deviceId> (kept across runs)')
    .option('--trusted-keys <file>', 'release-signing public keys: a JSON list [{keyId, publicKeyPem}], an edge.json / bundle, or a PEM file')
    .option('--cloud <url>', 'provision each device through the cloud API (POST /v1/devices) and trust its keys')
    .option('--token <token>', 'cloud admin token (with --cloud; or APPRENTICE_ADMIN_TOKEN)')
    .option('--prefix <prefix>', 'device id prefix', 'sim')
    .option('--group <name>', 'group of provisioned devices (repeatable, with --cloud)', (v: string, acc: string[]) => [...acc, v], [] as string[])
    .option('--connect-concurrency <n>', 'devices connecting at once, per worker', '50')
    .option('--workers <n>', `worker processes (default: the core count, ${availableParallelism()} here)`)
    .option('--fail-self-test <share>', 'share of devices (0..1, picked by device index) whose outputs are wrong, so their self-test fails every install', '0')
    .option('--never-connect <share>', 'share of devices (0..1, picked by device index) provisioned but never connected', '0')
    .option('--switched-off <share>', 'share of devices (0..1, picked by device index) online once (status and capabilities reported), then switched off for good', '0')
    .option('--agent-root <dir>', 'agent mode: every device declares agent-update and its platform, follows devices/{id}/agent and installs agent releases with the real edge/agent logic into <dir>/<deviceId> (the restart is simulated in process, then the real trial/commit runs)')
    .option('--agent-fail-rate <share>', 'agent mode: share of devices (0..1, picked by device index) on which every new agent version never passes its health commit, so it is rolled back and agent_rolled_back reported', '0')
    .addHelpText('after', '\nEither --trusted-keys FILE or --cloud URL --token T is required.\nExamples:\n  apprentice sim --devices 100 --mqtt-url mqtt://127.0.0.1:1883 --trusted-keys keys.json\n  apprentice sim -n 50 --mqtt-url mqtt://127.0.0.1:1883 --cloud http://127.0.0.1:8000 --token $TOKEN\n  apprentice sim -n 1000 --workers 2 --fail-self-test 0.01 --never-connect 0.05 --mqtt-url mqtt://127.0.0.1:1883 --cloud http://127.0.0.1:8000 --token $TOKEN')
    .action(async (opts: SimOpts) => {
      const n = parsePositiveInt('--devices', opts.devices);
      const conc = parsePositiveInt('--connect-concurrency', opts.connectConcurrency);
      const workers = opts.workers === undefined ? availableParallelism() : parsePositiveInt('--workers', opts.workers);
      const share = (flag: string, v: string): number => {
        try {
          return parseShare(flag, v);
        } catch (err) {
          throw new UsageError((err as Error).message);
        }
      };
      const shares = { failSelfTest: share('--fail-self-test', opts.failSelfTest), neverConnect: share('--never-connect', opts.neverConnect), switchedOff: share('--switched-off', opts.switchedOff), failAgentTrial: share('--agent-fail-rate', opts.agentFailRate) };
      if (shares.failAgentTrial > 0 && !opts.agentRoot) throw new UsageError('--agent-fail-rate needs --agent-root (agent mode)');
      if (!/^(mqtts?|wss?):\/\/[^/]+/.test(opts.mqttUrl)) throw new UsageError(`--mqtt-url: expected mqtt://host:port, got "${opts.mqttUrl}"`);
      const token = opts.token ?? process.env.APPRENTICE_ADMIN_TOKEN;
      if (!opts.trustedKeys && !opts.cloud) throw new UsageError('either --trusted-keys FILE or --cloud URL --token T is required');
      if (opts.trustedKeys && opts.cloud) throw new UsageError('--trusted-keys and --cloud are exclusive');
      if (opts.cloud && !token) throw new UsageError('--cloud needs --token (or APPRENTICE_ADMIN_TOKEN)');
      if (opts.cloud && !URL.canParse(opts.cloud)) throw new UsageError(`--cloud: not a URL: "${opts.cloud}"`);
      const { SimPool, fetchTrustedKeys } = await import('./index.js');
      const trustedKeys = opts.trustedKeys ? await readTrustedKeys(opts.trustedKeys) : await fetchTrustedKeys(opts.cloud!, token!);
      const dataDir = opts.dataDir ?? join(tmpdir(), `apprentice-sim-${opts.prefix}`);
      const fleet = new SimPool({
        devices: n,
        workers,
        mqttUrl: opts.mqttUrl,
        dataDir,
        trustedKeys,
        prefix: opts.prefix,
        logLevel: process.env.APPRENTICE_LOG_LEVEL ?? 'warn',
        connectConcurrency: conc,
        shares,
        agentRoot: opts.agentRoot,
        cloud: opts.cloud ? { url: opts.cloud, token: token!, groups: opts.group } : undefined,
      });
      let stopping = false;
      const stopped = new Promise<void>((resolve) => {
        const on = (sig: NodeJS.Signals): void => {
          if (stopping) process.exit(130);
          stopping = true;
          process.stdout.write(`\n${sig}: stopping ${n} devices…\n`);
          resolve();
        };
        process.once('SIGINT', on);
        process.once('SIGTERM', on);
      });
      const t0 = Date.now();
      let last = '';
      const print = (): void => {
        const s = fleet.stats();
        const running = Object.entries(s.running).map(([r, c]) => `r${r}:${c}`).join(' ') || '-';
        const line = `[${((Date.now() - t0) / 1000).toFixed(1)}s] devices ${s.devices}/${n} connected ${s.connected} off ${s.neverConnect + s.switchedOff} installed ${s.installed} rejected ${s.rejected} rolled_back ${s.rolledBack} running ${running} sessions ${s.sessions}${opts.agentRoot ? ` agents ${Object.entries(s.agents).map(([v, c]) => `${v}:${c}`).join(' ')}` : ''}`;
        if (line.replace(/^\[[^\]]*\] /, '') !== last) process.stdout.write(`${line}\n`);
        last = line.replace(/^\[[^\]]*\] /, '');
      };
      const timer = setInterval(print, 1_000);
      process.stdout.write(`sim: ${n} devices in ${fleet.workers} workers on ${opts.mqttUrl}, state in ${dataDir}\n`);
      const started = fleet.start().then(
        () => {
          const s = fleet.stats();
          process.stdout.write(`sim: ${s.connected} devices connected in ${((Date.now() - t0) / 1000).toFixed(1)}s (${s.neverConnect} never connecting, ${s.switchedOff} switched off, ${s.failSelfTest} failing their self-test)\n`);
        },
        (err: unknown) => {
          process.stderr.write(`sim: ${(err as Error).message}\n`);
          process.exitCode = 1;
        },
      );
      await Promise.race([stopped, started.then(() => (process.exitCode ? undefined : stopped))]);
      clearInterval(timer);
      print();
      await fleet.stop();
      process.stdout.write('sim: stopped\n');
    });
}
