import { createReadStream } from 'node:fs';
import { stat } from 'node:fs/promises';
import { isAbsolute, relative, resolve } from 'node:path';
import { Readable } from 'node:stream';
import { eq } from 'drizzle-orm';
import type { Logger } from '../../shared/log/index.js';
import type { StoreRegistry } from '../registry/open.js';
import { ArtifactUnavailableError, type ArtifactBlobs, type ArtifactStore } from './types.js';

/** The release (model or agent) whose artifact has this sha256: what devices may download, and its download name. */
async function releaseOf(reg: StoreRegistry, sha256: string): Promise<{ kind: 'model' | 'agent'; what: string; name: string; path: string; bytes: number } | undefined> {
  const { releases, agentReleases } = reg.t;
  const [model] = await reg.q.select({ seq: releases.seq, model: releases.model, path: releases.artifactPath, bytes: releases.bytes }).from(releases).where(eq(releases.sha256, sha256)).limit(1);
  if (model) return { kind: 'model', what: `release ${model.seq}`, name: `${model.model}-${model.seq}.onnx`, path: model.path, bytes: model.bytes };
  // Agent tarballs (issue 14) are served the same way, to the same device credentials.
  const [agent] = await reg.q.select({ seq: agentReleases.agentSeq, version: agentReleases.version, platform: agentReleases.platform, path: agentReleases.artifactPath, bytes: agentReleases.bytes }).from(agentReleases).where(eq(agentReleases.sha256, sha256)).limit(1);
  if (agent) return { kind: 'agent', what: `agent release ${agent.seq}`, name: `apprentice-edge-${agent.version}-${agent.platform}.tar.gz`, path: agent.path, bytes: agent.bytes };
  return undefined;
}

/** Artifacts of the registry's releases, files under `artifactsDir` (releases.artifact_path): the SQLite default. */
export function fileArtifactStore({ registry, artifactsDir, log }: { registry: StoreRegistry; artifactsDir: string; log: Logger }): ArtifactStore {
  const root = resolve(artifactsDir);
  return {
    async get(sha256) {
      const row = await releaseOf(registry, sha256);
      if (!row) return undefined;
      const path = resolve(root, row.path);
      const rel = relative(root, path);
      if (rel === '' || rel.startsWith('..') || isAbsolute(rel)) {
        log.error({ release: row.what, path }, 'artifact store: path is outside artifactsDir');
        throw new ArtifactUnavailableError(`artifact ${sha256} is not available`);
      }
      const st = await stat(path).catch(() => undefined);
      if (!st?.isFile()) return undefined;
      if (st.size !== row.bytes) {
        log.error({ release: row.what, path, expected: row.bytes, actual: st.size }, 'artifact store: file has the wrong size');
        throw new ArtifactUnavailableError(`artifact ${sha256} does not match the registry`);
      }
      return {
        size: st.size,
        name: row.name,
        read: (start, end) => Readable.toWeb(createReadStream(path, { start, end })) as unknown as ReadableStream<Uint8Array>,
      };
    },
  };
}

/**
 * Artifacts of the registry's releases, bytes from `blobs` by sha256 (the registry store with PostgreSQL):
 * any replica serves any release, whoever stored it. Only release artifacts are served, never teacher files
 * or datasets that share the store.
 */
export function blobArtifactStore({ registry, blobs, log }: { registry: StoreRegistry; blobs: ArtifactBlobs; log: Logger }): ArtifactStore {
  return {
    async get(sha256) {
      const row = await releaseOf(registry, sha256);
      if (!row) return undefined;
      const blob = await blobs.open(row.kind, sha256);
      if (!blob) return undefined;
      if (blob.bytes !== row.bytes) {
        log.error({ release: row.what, sha256, expected: row.bytes, actual: blob.bytes }, 'artifact store: stored blob has the wrong size');
        throw new ArtifactUnavailableError(`artifact ${sha256} does not match the registry`);
      }
      return { size: blob.bytes, name: row.name, read: blob.read };
    },
  };
}
