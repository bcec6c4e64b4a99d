import { createReadStream } from 'node:fs';
import { readFile, stat } from 'node:fs/promises';
import { dirname, join, resolve } from 'node:path';
import { Readable } from 'node:stream';
import { fileURLToPath } from 'node:url';
import { Command } from 'commander';
import { z } from 'zod';
import { ApiClient, addApiOptions, resolveAdminToken } from '../../shared/cli/api-client.js';
import { UsageError, parsePositiveInt } from '../../shared/cli/errors.js';
import { createProgressBar } from '../../shared/cli/progress.js';
import { AGENT_PLATFORMS, upgradeFromList, type AgentPlatform } from '../../shared/protocol/agent.js';
import { agentVersion } from '../../shared/protocol/schemas.js';
import { buildAgent, hostPlatform } from './build.js';

/** What the CLI reads of an agent release (loose: a newer cloud may add fields). */
const agentSchema = z.object({ agentSeq: z.number(), version: z.string(), platform: z.string(), sha256: z.string(), bytes: z.number(), files: z.number(), reissueOf: z.number().nullable(), upgradeFrom: z.array(z.string()).optional(), createdAt: z.string() });
const rolloutSchema = z.object({ id: z.string(), model: z.string(), kind: z.string().optional(), release: z.number(), state: z.string(), rollbackRelease: z.number().nullable().optional(), reason: z.string().nullable() });

export interface AgentCliOptions {
  fetchImpl?: typeof fetch;
  env?: NodeJS.ProcessEnv;
}

/** The checkout this CLI runs from (source: cloud/agents/, build: dist/cloud/agents/). */
function checkoutRoot(): string {
  const here = dirname(fileURLToPath(import.meta.url));
  const up = resolve(here, '../..');
  return up.endsWith('/dist') ? dirname(up) : up;
}

async function checkoutVersion(source: string): Promise<string> {
  try {
    return (JSON.parse(await readFile(join(source, 'package.json'), 'utf8')) as { version?: string }).version ?? 'unknown';
  } catch {
    return 'unknown';
  }
}

const parsePlatform = (v: string): AgentPlatform => {
  if (!(AGENT_PLATFORMS as readonly string[]).includes(v)) throw new UsageError(`--platform: expected ${AGENT_PLATFORMS.join(' or ')}, got "${v}"`);
  return v as AgentPlatform;
};
const parseVersion = (v: string): string => {
  if (!agentVersion.safeParse(v).success) throw new UsageError(`--version: expected a version like 0.2.0, got "${v}"`);
  return v;
};

const parseUpgradeFrom = (v: string): string[] => {
  const r = upgradeFromList.safeParse(v);
  if (!r.success) throw new UsageError(`--upgrade-from: ${r.error.issues[0]?.message ?? 'invalid'} (got "${v}")`);
  return r.data;
};

const line = (a: z.infer<typeof agentSchema>): string => `${a.version.padEnd(12)} ${a.platform.padEnd(12)} agentSeq ${String(a.agentSeq).padEnd(5)} ${String(a.bytes).padStart(10)} bytes ${String(a.files).padStart(6)} files  ${a.sha256.slice(0, 12)}…${a.reissueOf !== null ? `  (re-issue of ${a.reissueOf})` : ''}`;

/** `apprentice agent build|push|list|rollback` (issue 14): the daemon's own releases. */
export function agentCommand(o: AgentCliOptions = {}): Command {
  const cmd = new Command('agent').description('Build, push, list and roll back releases of the edge daemon itself (signed agent releases, rolled out like models)');
  const client = (f: { cloud: string; token?: string; tokenFile?: string }, timeoutMs?: number) => new ApiClient({ cloud: f.cloud, token: resolveAdminToken(f, o.env), fetchImpl: o.fetchImpl, ...(timeoutMs ? { timeoutMs } : {}) });

  cmd.addCommand(
    new Command('build')
      .description('Pack the lean edge bundle of this (built) checkout into one deterministic tar.gz with agent.json {version, platform}')
      .option('--version <v>', "agent version (default: the checkout's package.json version)", parseVersion)
      .option('--platform <p>', `${AGENT_PLATFORMS.join(' or ')} (default: this machine's)`, parsePlatform)
      .option('--out <file>', 'output file (default apprentice-edge-VERSION-PLATFORM.tar.gz)')
      .option('--source <dir>', 'the built checkout to pack (default: the one this CLI runs from)')
      .option('--json', 'print the result as JSON', false)
      .addHelpText('after', "\nNative binaries (better-sqlite3, onnxruntime, sharp) must be the platform's: linux-arm64 builds only on an\narm64 machine (or after cross-compiling better-sqlite3); refused with exit 2 otherwise.\n\nExample:\n  npm run build && apprentice agent build --version 0.2.0 --platform linux-x64 --out dist/apprentice-edge-0.2.0-linux-x64.tar.gz")
      .action(async (f) => {
        const platform: AgentPlatform | undefined = f.platform ?? hostPlatform();
        if (!platform) throw new UsageError(`--platform: this machine (${process.platform}-${process.arch}) is not an agent platform; give ${AGENT_PLATFORMS.join(' or ')}`);
        const source = resolve(f.source ?? checkoutRoot());
        let bar: ReturnType<typeof createProgressBar> | undefined;
        const r = await buildAgent({
          source,
          platform,
          version: f.version,
          out: resolve(f.out ?? `apprentice-edge-${f.version ?? (await checkoutVersion(source))}-${platform}.tar.gz`),
          onStep: (s) => {
            if (s.step !== 'pack') process.stderr.write(`agent build: ${s.step}: ${s.detail}\n`);
          },
          onFile: (n, total) => {
            bar ??= createProgressBar({ label: 'agent build: pack', total });
            bar.update(n);
          },
        }).finally(() => bar?.stop());
        process.stdout.write(f.json ? `${JSON.stringify({ ...r, platform })}\n` : `${r.out}: agent ${r.version} for ${platform}, ${r.files} files, ${r.bytes} bytes\n`);
      }),
  );

  cmd.addCommand(
    addApiOptions(new Command('push'))
      .description('Upload an agent tarball; the cloud lists it, checks it and signs it as an agent release')
      .argument('<file>', 'a tar.gz from `apprentice agent build`')
      .option('--version <v>', "refuse unless the tarball's agent.json says this version", parseVersion)
      .option('--platform <p>', "refuse unless the tarball's agent.json says this platform", parsePlatform)
      .option('--upgrade-from <versions>', 'agent versions that may install this one, comma-separated (default: * = any)', parseUpgradeFrom)
      .option('--timeout <seconds>', 'upload timeout', (v) => parsePositiveInt('--timeout', v), 600)
      .option('--json', 'print the release as JSON', false)
      .addHelpText('after', '\nExample:\n  apprentice agent push apprentice-edge-0.2.0-linux-x64.tar.gz --cloud http://127.0.0.1:8787 --token-file DATA/admin-token\n  apprentice agent push apprentice-edge-0.2.0-linux-x64.tar.gz --upgrade-from 0.1.0,0.1.1 ...')
      .action(async (file: string, f) => {
        const st = await stat(file).catch((err: NodeJS.ErrnoException) => {
          throw new UsageError(`${file}: cannot read (${err.code ?? err.message})`);
        });
        if (!st.isFile()) throw new UsageError(`${file}: not a file`);
        if (st.size === 0) throw new UsageError(`${file}: the file is empty`);
        // Streamed from disk: the tarball is never held in the CLI's memory.
        const data = Readable.toWeb(createReadStream(file)) as unknown as ReadableStream<Uint8Array>;
        const r = await client(f, f.timeout * 1000).request('POST', 'v1/agents', { body: { data, contentType: 'application/gzip' }, query: { version: f.version, platform: f.platform, upgradeFrom: f.upgradeFrom?.join(',') }, schema: agentSchema });
        process.stdout.write(f.json ? `${JSON.stringify(r, null, 2)}\n` : `agent ${r.version} for ${r.platform}: agentSeq ${r.agentSeq}, ${r.files} files, ${r.bytes} bytes, sha256 ${r.sha256}${r.upgradeFrom && !r.upgradeFrom.includes('*') ? `, upgrades from ${r.upgradeFrom.join(', ')}` : ''}\nroll it out: apprentice rollout create --agent ${r.version} --platform ${r.platform} ...\n`);
      }),
  );

  cmd.addCommand(
    addApiOptions(new Command('list'))
      .description('List agent releases, newest first')
      .option('--platform <p>', 'only this platform', parsePlatform)
      .option('--json', 'print JSON', false)
      .action(async (f) => {
        const r = await client(f).request('GET', 'v1/agents', { query: { platform: f.platform }, schema: z.object({ agents: z.array(agentSchema) }) });
        process.stdout.write(f.json ? `${JSON.stringify(r.agents, null, 2)}\n` : r.agents.length ? `${r.agents.map(line).join('\n')}\n` : 'no agent releases\n');
      }),
  );

  cmd.addCommand(
    addApiOptions(new Command('rollback'))
      .description("Roll a platform's latest agent rollout back: the previous version is re-issued at a higher agentSeq (reissueOf set) to every device given the new one")
      .requiredOption('--platform <p>', AGENT_PLATFORMS.join(' or '), parsePlatform)
      .option('--rollout <id>', 'the rollout (default: the latest agent rollout of the platform)')
      .option('--json', 'print the rollout as JSON', false)
      .action(async (f) => {
        const api = client(f);
        let id: string | undefined = f.rollout;
        if (!id) {
          const all = await api.request('GET', 'v1/rollouts', { schema: z.object({ rollouts: z.array(rolloutSchema) }) });
          id = all.rollouts.find((r) => r.model === `agent:${f.platform}`)?.id;
          if (!id) throw new UsageError(`no agent rollout for ${f.platform} to roll back`);
        }
        const r = await api.request('POST', `v1/rollouts/${encodeURIComponent(id)}/rollback`, { json: {}, schema: rolloutSchema });
        process.stdout.write(f.json ? `${JSON.stringify(r, null, 2)}\n` : `rollout ${r.id}: ${r.state}${r.rollbackRelease != null ? `, re-issued as agentSeq ${r.rollbackRelease}` : ''}${r.reason ? ` — ${r.reason}` : ''}\n`);
      }),
  );
  return cmd;
}

