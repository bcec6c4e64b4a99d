import { createReadStream } from 'node:fs';
import { stat } from 'node:fs/promises';
import { isAbsolute, relative, resolve } from 'node:path';
import { Readable } from 'node:stream';
import { eq } from 'drizzle-orm';
import type { Logger } from '../../shared/log/index.js';
import type { RegistryDb } from '../registry/db.js';
import { agentReleases, releases } from '../registry/schema.js';

/** One stored artifact, found by its sha256. */
export interface StoredArtifact {
  size: number;
  /** A download name, e.g. `digits-3.onnx`. */
  name: string;
  /** Bytes start..end (inclusive). */
  read(start: number, end: number): ReadableStream<Uint8Array>;
}

/**
 * Where release artifacts (model files and agent tarballs) live, content-addressed by sha256 (issue 10 item 8). The file store below
 * reads the files a round or an upload wrote under the data dir; a database- or object-store-backed
 * one only has to implement `get`.
 */
export interface ArtifactStore {
  /** The artifact whose sha256 is `sha256` (64 lowercase hex), or undefined when none is stored. */
  get(sha256: string): Promise<StoredArtifact | undefined>;
}

export class ArtifactUnavailableError extends Error {
  override readonly name = 'ArtifactUnavailableError';
}

/** Artifacts of the registry's releases, files under `artifactsDir` (releases.artifact_path). */
export function fileArtifactStore({ db, artifactsDir, log }: { db: RegistryDb; artifactsDir: string; log: Logger }): ArtifactStore {
  const root = resolve(artifactsDir);
  return {
    async get(sha256) {
      const model = db.select({ seq: releases.seq, model: releases.model, path: releases.artifactPath, bytes: releases.bytes }).from(releases).where(eq(releases.sha256, sha256)).limit(1).get();
      // Agent tarballs (issue 14) are served the same way, to the same device credentials.
      const agent = model ? undefined : db.select({ seq: agentReleases.agentSeq, version: agentReleases.version, platform: agentReleases.platform, path: agentReleases.artifactPath, bytes: agentReleases.bytes }).from(agentReleases).where(eq(agentReleases.sha256, sha256)).limit(1).get();
      const row = model ? { ...model, name: `${model.model}-${model.seq}.onnx` } : agent ? { ...agent, name: `apprentice-edge-${agent.version}-${agent.platform}.tar.gz` } : undefined;
      if (!row) return undefined;
      const path = resolve(root, row.path);
      const rel = relative(root, path);
      if (rel === '' || rel.startsWith('..') || isAbsolute(rel)) {
        log.error({ release: row.seq, path }, 'artifact store: path is outside artifactsDir');
        throw new ArtifactUnavailableError(`artifact ${sha256} is not available`);
      }
      const st = await stat(path).catch(() => undefined);
      if (!st?.isFile()) return undefined;
      if (st.size !== row.bytes) {
        log.error({ release: row.seq, path, expected: row.bytes, actual: st.size }, 'artifact store: file has the wrong size');
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
