/**
 * An agent push on either registry dialect (issue 15): with PostgreSQL the tarball goes into the registry's
 * artifact store (no file under the data dir, the temp file removed), and the publisher's chunks are read back
 * from there by sha256; with SQLite it stays the historic file `agents/SHA.tar.gz`.
 */
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { ensureAgentChunks } from '../../../cloud/agents/delivery.js';
import { releaseAgent } from '../../../cloud/agents/release.js';
import { openArtifacts } from '../../../cloud/artifacts/index.js';
import { ReleasePublisher } from '../../../cloud/fleet/publisher.js';
import { chunkArtifact, generateSigningKey, sha256Of } from '../../../shared/manifest/index.js';
import { silentLogger } from '../../../shared/log/index.js';
import { topics } from '../../../shared/protocol/index.js';
import { tinyBundle } from '../../fixtures/agent-tar.js';
import { registryDialects } from '../../helpers/dialects.js';
import { FakeMqtt } from '../../unit/fleet/fixtures.js';

const dialects = registryDialects();

describe.each(dialects)('agent push into the artifact store on $name', (d) => {
  let dir: string | undefined;
  afterEach(async () => {
    await d.close();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it('stores the tarball where the dialect says and publishes its chunks from there', async (ctx) => {
    const reg = await d.open(ctx);
    dir = mkdtempSync(join(tmpdir(), 'apprentice-agent-push-'));
    const dataDir = join(dir, 'data');
    const { blobs } = openArtifacts({ registry: reg, dataDir, log: silentLogger });
    const tar = join(dir, 'push.tar.gz');
    const bytes = await tinyBundle(dir, '0.3.0');
    writeFileSync(tar, bytes);

    const row = await releaseAgent({ registry: reg, dataDir, blobs, key: generateSigningKey(), tarPath: tar, chunkSize: 1024, now: new Date() });
    expect(row).toMatchObject({ sha256: sha256Of(bytes), bytes: bytes.byteLength, artifactPath: `agents/${sha256Of(bytes)}.tar.gz` });
    const file = join(dataDir, row.artifactPath);
    if (reg.dialect === 'postgres') {
      expect(blobs.backend).toBe('registry');
      expect(existsSync(file)).toBe(false);
      expect(existsSync(tar)).toBe(false);
      const [blob] = await reg.q.select().from(reg.t.artifactBlobs);
      expect(Number(blob!.bytes)).toBe(bytes.byteLength);
    } else {
      expect(blobs.backend).toBe('file');
      expect(readFileSync(file)).toEqual(bytes);
    }
    expect(Buffer.from(await blobs.readAll('agent', row.sha256))).toEqual(bytes);

    // The chunk publisher reads the same bytes back (from the registry on PostgreSQL, the file on SQLite).
    const mqtt = new FakeMqtt();
    const publisher = new ReleasePublisher({ mqtt, dataDir, blobs, log: silentLogger });
    await ensureAgentChunks(publisher, reg, row);
    const chunks = chunkArtifact(bytes, 1024);
    expect(chunks.length).toBe(Math.ceil(bytes.byteLength / 1024));
    for (const [i, c] of chunks.entries()) expect(mqtt.retained.get(topics.artifactChunk(row.sha256, i))).toEqual(Buffer.from(c));
  });
});
