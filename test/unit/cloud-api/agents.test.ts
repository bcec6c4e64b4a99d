import { verify } from 'node:crypto';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import { afterEach, describe, expect, it } from 'vitest';
import { agentReleases } from '../../../cloud/registry/schema.js';
import { canonicalBytes } from '../../../shared/manifest/canonical.js';
import { loadPublicKey } from '../../../shared/manifest/keys.js';
import { sha256Of } from '../../../shared/manifest/artifact.js';
import { agentManifestSchema } from '../../../shared/protocol/agent.js';
import { rawAgentTar, tinyBundle } from '../../fixtures/agent-tar.js';
import { harness, json, TOKEN, type Harness } from './helpers.js';

let h: Harness | undefined;
afterEach(() => {
  h?.close();
  h = undefined;
});

const auth = { authorization: `Bearer ${TOKEN}` };

function push(app: Harness['app'], bytes: Uint8Array, { query = '', contentType = 'application/gzip' } = {}): Promise<Response> {
  return Promise.resolve(app.request(`/v1/agents${query}`, { method: 'POST', headers: { ...auth, 'content-type': contentType }, body: bytes }));
}

/** Nothing half-stored: no row, no tarball, no temp file. */
function expectNothingStored(x: Harness): void {
  expect(x.registry.db.select().from(agentReleases).all()).toEqual([]);
  for (const d of ['agents', 'tmp']) {
    const p = join(x.artifactsDir, d);
    expect(existsSync(p) ? readdirSync(p) : [], d).toEqual([]);
  }
}

describe('POST /v1/agents (agent push)', () => {
  it('lists the archive itself, stores the tarball and signs an agent manifest with the release key; GET shows it', async () => {
    h = harness({ uploads: { publicBaseUrl: 'https://cloud.example.com' }, artifacts: { trustedProxies: [], clientAddress: () => '127.0.0.1' } });
    const tar = await tinyBundle(h.dir);
    const res = await push(h.app, tar, { query: '?version=0.2.0&platform=linux-x64' });
    expect(res.status).toBe(201);
    const body = await json(res);
    expect(body).toMatchObject({ agentSeq: 1, version: '0.2.0', platform: 'linux-x64', sha256: sha256Of(tar), bytes: tar.length, files: 4, reissueOf: null, keyId: h.keys.active().keyId });

    const detail = await json(await h.app.request('/v1/agents/0.2.0/linux-x64', { headers: auth }));
    const m = agentManifestSchema.parse(detail.manifest);
    expect(m.files.map((f) => f.path)).toEqual(['agent.json', 'dist/bin/edge.js', 'node_modules/dep/index.js', 'package.json']);
    expect(m.files.find((f) => f.path === 'dist/bin/edge.js')).toEqual({ path: 'dist/bin/edge.js', mode: 0o644, sha256: sha256Of(Buffer.from("console.log('edge 0.2.0');\n")), bytes: 27 });
    expect(m.artifact).toMatchObject({ format: 'tar.gz', sha256: sha256Of(tar), bytes: tar.length, url: `https://cloud.example.com/v1/artifacts/${sha256Of(tar)}` });
    expect(m).toMatchObject({ kind: 'agent', agentSeq: 1, upgradeFrom: ['*'], minProtocolVersion: 2 });
    // The signature verifies over the canonical JSON with the cloud's public release key.
    const ok = verify(null, canonicalBytes(detail.manifest), loadPublicKey(h.keys.active().publicKeyPem), Buffer.from(detail.signature.sig, 'base64'));
    expect(ok).toBe(true);
    // The tarball is in the store, content-addressed, and served on the device artifact route.
    expect(readFileSync(join(h.artifactsDir, 'agents', `${sha256Of(tar)}.tar.gz`)).equals(tar)).toBe(true);
    const served = await h.app.request(`/v1/artifacts/${sha256Of(tar)}`, { headers: auth });
    expect(served.status).toBe(200);
    expect(Buffer.from(await served.arrayBuffer()).equals(tar)).toBe(true);

    const list = await json(await h.app.request('/v1/agents?platform=linux-x64', { headers: auth }));
    expect(list.agents.map((a: { version: string }) => a.version)).toEqual(['0.2.0']);
    expect((await json(await h.app.request('/v1/agents?platform=linux-arm64', { headers: auth }))).agents).toEqual([]);
  });

  it('signs ?upgradeFrom into the manifest (deduplicated), shows it on the release; the default stays ["*"]', async () => {
    h = harness();
    const res = await push(h.app, await tinyBundle(h.dir, '0.2.0'), { query: '?upgradeFrom=0.1.0,0.1.1-rc.1,0.1.0' });
    expect(res.status).toBe(201);
    expect((await json(res)).upgradeFrom).toEqual(['0.1.0', '0.1.1-rc.1']);
    const detail = await json(await h.app.request('/v1/agents/0.2.0/linux-x64', { headers: auth }));
    expect(agentManifestSchema.parse(detail.manifest).upgradeFrom).toEqual(['0.1.0', '0.1.1-rc.1']);
    const plain = await json(await push(h.app, await tinyBundle(h.dir, '0.3.0')));
    expect(plain.upgradeFrom).toEqual(['*']);
  });

  it('refuses a second push of the same version and platform with 409, and takes another platform', async () => {
    h = harness();
    expect((await push(h.app, await tinyBundle(h.dir))).status).toBe(201);
    const again = await push(h.app, await tinyBundle(h.dir));
    expect(again.status).toBe(409);
    expect((await json(again)).error.code).toBe('agent_exists');
    expect((await push(h.app, await tinyBundle(h.dir, '0.2.0', 'linux-arm64'))).status).toBe(201);
    expect((await push(h.app, await tinyBundle(h.dir, '0.3.0'))).status).toBe(201);
    expect(h.registry.db.select({ s: agentReleases.agentSeq }).from(agentReleases).all().map((r) => r.s).sort()).toEqual([1, 2, 3]);
  });

  const refusals: [string, () => Buffer | Promise<Buffer>, number, string, RegExp, string?][] = [
    ['not gzip', () => Buffer.from('just some text, not an archive'), 422, 'not_tar_gz', /not a gzip-compressed tar/],
    ['gzip of garbage', () => gzipSync(Buffer.alloc(4096, 7)), 422, 'not_tar_gz', /not a valid tar.gz|not a gzip/],
    ['an absolute path', () => rawAgentTar([{ path: '/etc/cron.d/evil', body: 'x' }]), 422, 'unsafe_entry', /\/etc\/cron.d\/evil: not a relative path/],
    ['a .. path', () => rawAgentTar([{ path: 'dist/../../evil.js', body: 'x' }]), 422, 'unsafe_entry', /not a relative path/],
    ['a symlink escaping the bundle', () => rawAgentTar([{ path: 'dist/x', type: '2', linkname: '../../etc/passwd' }]), 422, 'unsafe_entry', /escapes the bundle/],
    ['a symlink inside (not in the listing)', () => rawAgentTar([{ path: 'dist/x', type: '2', linkname: 'y' }]), 422, 'unsafe_entry', /symlinks are not allowed/],
    ['a hard link', () => rawAgentTar([{ path: 'dist/x', type: '1', linkname: 'agent.json' }]), 422, 'unsafe_entry', /Link entries are not allowed/],
    ['a device file', () => rawAgentTar([{ path: 'dev/tty', type: '3' }]), 422, 'unsafe_entry', /CharacterDevice entries are not allowed/],
    ['a FIFO', () => rawAgentTar([{ path: 'fifo', type: '6' }]), 422, 'unsafe_entry', /FIFO entries are not allowed/],
    ['a setuid file', () => rawAgentTar([{ path: 'bin/su', mode: 0o4755, body: 'x' }]), 422, 'unsafe_entry', /setuid, setgid or sticky/],
    ['a duplicate path', () => rawAgentTar([{ path: 'a.js', body: '1' }, { path: 'a.js', body: '2' }]), 422, 'duplicate_path', /appears twice/],
    ['no agent.json', () => rawAgentTar([{ path: 'a.js', body: '1' }], null), 422, 'bad_agent_json', /no agent.json/],
    ['a bad agent.json platform', () => rawAgentTar([{ path: 'a.js', body: '1' }], { version: '0.2.0', platform: 'win32' }), 422, 'bad_agent_json', /"platform" must be one of/],
    ['agent.json disagreeing with ?version', () => rawAgentTar([{ path: 'a.js', body: '1' }]), 422, 'agent_mismatch', /agent.json says version 0.2.0, the push says 0.9.9/, '?version=0.9.9'],
    ['agent.json disagreeing with ?platform', () => rawAgentTar([{ path: 'a.js', body: '1' }]), 422, 'agent_mismatch', /says platform linux-x64, the push says linux-arm64/, '?platform=linux-arm64'],
    ['a malformed ?upgradeFrom', () => rawAgentTar([{ path: 'a.js', body: '1' }]), 400, 'invalid_query', /upgradeFrom: not a version like 0.1.0: "latest"/, '?upgradeFrom=0.1.0,latest'],
    ['?upgradeFrom mixing * with versions', () => rawAgentTar([{ path: 'a.js', body: '1' }]), 400, 'invalid_query', /\* means any version/, '?upgradeFrom=*,0.1.0'],
    ['an empty ?upgradeFrom entry', () => rawAgentTar([{ path: 'a.js', body: '1' }]), 400, 'invalid_query', /an empty entry/, '?upgradeFrom=0.1.0,'],
    ['a bad ?platform', () => rawAgentTar([{ path: 'a.js', body: '1' }]), 400, 'invalid_query', /platform/, '?platform=mips'],
  ];
  for (const [what, make, status, code, message, query] of refusals) {
    it(`refuses ${what}: ${status} ${code}, nothing stored`, async () => {
      h = harness();
      const res = await push(h.app, await make(), { query: query ?? '' });
      const body = await json(res);
      expect(res.status, JSON.stringify(body)).toBe(status);
      expect(body.error.code).toBe(code);
      expect(body.error.message).toMatch(message);
      expectNothingStored(h);
    });
  }

  it('refuses an oversized tarball with 413 while streaming (no Content-Length), an empty body with 400 and a JSON body with 415', async () => {
    h = harness({ limits: { maxUploadBytes: 2048 } });
    const big = Buffer.alloc(8192, 1);
    const stream = new ReadableStream<Uint8Array>({ start(c) { for (let i = 0; i < 8; i++) c.enqueue(big.subarray(i * 1024, (i + 1) * 1024)); c.close(); } });
    const res = await Promise.resolve(h.app.request('/v1/agents', { method: 'POST', headers: { ...auth, 'content-type': 'application/gzip' }, body: stream, duplex: 'half' } as RequestInit));
    expect(res.status).toBe(413);
    expect((await json(res)).error.message).toMatch(/exceeds 2048 bytes/);
    expect((await push(h.app, new Uint8Array(0))).status).toBe(400);
    const bad = await push(h.app, Buffer.from('{}'), { contentType: 'application/json' });
    expect(bad.status).toBe(415);
    expectNothingStored(h);
  });

  it('answers 404 for an unknown release and 401 without the admin token', async () => {
    h = harness();
    const res = await h.app.request('/v1/agents/9.9.9/linux-x64', { headers: auth });
    expect(res.status).toBe(404);
    expect((await json(res)).error.code).toBe('not_found');
    expect((await h.app.request('/v1/agents', { method: 'POST', body: 'x' })).status).toBe(401);
  });
});
