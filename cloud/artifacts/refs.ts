import type { ArtifactBlobs, ArtifactKind } from './types.js';

/**
 * References to stored files (issue 15 item 2: teacher files and datasets every replica reaches). A model's
 * teacher file list and a dataset spec may name `artifact:SHA256` instead of a path on one machine's disk:
 * `teacher.files: ["artifact:1f…"]`, `baseData: "csv:artifact:9c…"`, `"idx:artifact:aa…,artifact:bb…"`.
 * Whoever runs the teacher or loads the dataset (the round worker, on any replica) resolves them to a local
 * file first. `images:DIR` names a directory, which the store does not hold.
 */
const REF = /artifact:([0-9a-f]{64})(?![0-9a-f])/g;

export const artifactRef = (sha256: string): string => `artifact:${sha256}`;

/** The sha256 of every `artifact:` reference in `text`, in order. */
export function artifactRefsIn(text: string): string[] {
  return [...text.matchAll(REF)].map((m) => m[1]!);
}

/**
 * `text` with every `artifact:SHA256` replaced by a local path holding those bytes (the file itself on the
 * file store, a verified cached copy on the registry store). Throws ArtifactUnavailableError for a reference
 * the store does not hold. Text without references comes back unchanged.
 *
 * @example
 * const files = await Promise.all(model.teacher.files.map((f) => resolveArtifactRefs(artifacts.blobs, 'teacher', f)));
 * const base = await resolveArtifactRefs(artifacts.blobs, 'dataset', settings.baseData);
 */
export async function resolveArtifactRefs(blobs: ArtifactBlobs, kind: ArtifactKind, text: string): Promise<string> {
  const shas = [...new Set(artifactRefsIn(text))];
  if (shas.length === 0) return text;
  const paths = new Map(await Promise.all(shas.map(async (s) => [s, await blobs.localPath(kind, s)] as const)));
  return text.replace(REF, (_m, sha: string) => paths.get(sha)!);
}

/**
 * Stores local files (a teacher's ONNX files, a dataset file named at registration) and gives back their
 * `artifact:` references, so the model's row names bytes every replica reaches rather than this host's paths.
 */
export async function storeFilesAsRefs(blobs: ArtifactBlobs, kind: ArtifactKind, paths: string[]): Promise<string[]> {
  const refs: string[] = [];
  for (const path of paths) refs.push(artifactRef((await blobs.put(kind, { path })).sha256));
  return refs;
}
