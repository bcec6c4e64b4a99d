/**
 * The artifact store the HTTP route serves from; it lives in cloud/artifacts (issue 15 item 3: files under the
 * data dir on SQLite, the registry on PostgreSQL). Re-exported here for the API's existing imports.
 */
export { ArtifactUnavailableError, blobArtifactStore, fileArtifactStore, type ArtifactBlobs, type ArtifactStore, type StoredArtifact } from '../artifacts/index.js';
