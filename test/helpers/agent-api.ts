/**
 * The cloud's HTTP API as the agent end-to-end tests use it (issue 14): JSON calls with the admin token,
 * and `apprentice agent build` + `apprentice agent push` of a bundle made of given files (the real packer,
 * cloud/agents/pack.ts, then `POST /v1/agents`).
 */
import { mkdtempSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { packAgentBundle } from '../../cloud/agents/pack.js';
import type { AgentPlatform } from '../../shared/protocol/agent.js';
import type { BundleFile } from '../fixtures/agent-release.js';
import { writeBundleFiles } from './fake-agent-device.js';

export interface PushedAgent {
  agentSeq: number;
  bytes: number;
  version: string;
  platform: string;
}

export function agentApi(apiUrl: string, token: string) {
  /** A JSON call; throws with the status and body unless 2xx. */
  const call = async (method: string, path: string, body?: unknown): Promise<any> => {
    const res = await fetch(`${apiUrl}${path}`, { method, headers: { authorization: `Bearer ${token}`, ...(body !== undefined ? { 'content-type': 'application/json' } : {}) }, ...(body !== undefined ? { body: JSON.stringify(body) } : {}) });
    const text = await res.text();
    if (!res.ok) throw new Error(`${method} ${path}: ${res.status} ${text}`);
    return JSON.parse(text);
  };
  /** Stages `files` under `workDir`, packs them as agent `version` for `platform`, and pushes the tarball. */
  const pushAgent = async (workDir: string, o: { version: string; platform: string; files: readonly BundleFile[] }): Promise<PushedAgent> => {
    const stage = mkdtempSync(join(workDir, `stage-${o.version}-`));
    writeBundleFiles(stage, o.files);
    const out = join(workDir, `apprentice-edge-${o.version}-${o.platform}.tar.gz`);
    await packAgentBundle({ root: stage, out, version: o.version, platform: o.platform as AgentPlatform, onFile: () => undefined });
    const res = await fetch(`${apiUrl}/v1/agents?version=${o.version}&platform=${o.platform}`, { method: 'POST', headers: { authorization: `Bearer ${token}`, 'content-type': 'application/gzip' }, body: readFileSync(out) });
    const body = await res.json();
    if (res.status !== 201) throw new Error(`push ${o.version}: ${res.status} ${JSON.stringify(body)}`);
    return body as PushedAgent;
  };
  return { call, pushAgent };
}
