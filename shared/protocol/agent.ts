import { z } from 'zod';
import { agentSeq, agentVersion, isoTime, PROTOCOL_VERSION, sha256Hex, signatureSchema } from './schemas.js';

/**
 * Agent releases (issue 14): the daemon's own code, signed with the same keys as model releases but
 * on its own retained topic (`devices/{id}/agent`, topics.agent) and with its own sequence, so an
 * agent update never overwrites the model's `desired` and the two floors never mix.
 *
 * `kind: 'agent'` keeps the two signed documents apart: a model manifest's strict schema refuses an
 * agent manifest (and the other way round), so a signature over one can never install as the other.
 * Sent only to devices that declare DEVICE_CAPABILITIES.agentUpdate (compat.ts).
 */
export const AGENT_PLATFORMS = ['linux-x64', 'linux-arm64'] as const;
export type AgentPlatform = (typeof AGENT_PLATFORMS)[number];

/** Most files an agent bundle may list; the lean edge bundle has a few thousand. */
export const MAX_AGENT_FILES = 50_000;
/** Largest agent tarball the protocol allows (the lean linux-x64 bundle is ~25 MB compressed). */
export const MAX_AGENT_BYTES = 512 * 1024 * 1024;

/** A relative POSIX path inside the bundle: no absolute paths, no `..`, no empty or `.` segments. */
export const agentPath = z
  .string()
  .min(1)
  .max(1024)
  .refine((p) => !p.startsWith('/') && !p.includes('\\') && !p.includes('\u0000') && p.split('/').every((s) => s !== '' && s !== '.' && s !== '..'), 'expected a relative path without "..", "." or empty segments');

export const agentFileSchema = z.strictObject({
  path: agentPath,
  /** Permission bits only (0o755, 0o644): no setuid, setgid or sticky bits. */
  mode: z.number().int().min(0).max(0o777),
  sha256: sha256Hex,
  bytes: z.number().int().min(0).max(MAX_AGENT_BYTES),
});
export type AgentFile = z.infer<typeof agentFileSchema>;

export const agentArtifactSchema = z.strictObject({
  format: z.literal('tar.gz'),
  sha256: sha256Hex,
  bytes: z.number().int().min(1).max(MAX_AGENT_BYTES),
  chunkSize: z.number().int().min(1024).max(16 * 1024 * 1024),
  chunks: z.array(sha256Hex).min(1),
  /** Optional HTTP(S) source for the same bytes; checked against sha256 and length either way. */
  url: z.url({ protocol: /^https?$/ }).optional(),
});

/** One `upgradeFrom` entry a push may name: a semver-like version (`0.1.0`, `1.2.0-rc.1`), as agent.json's. */
const UPGRADE_FROM_VERSION = /^\d+(\.\d+){0,2}([-+][0-9A-Za-z.+-]+)?$/;

/**
 * `upgradeFrom` as a push gives it (CLI `--upgrade-from 0.1.0,0.1.1`, API `?upgradeFrom=`): a comma-separated
 * list of versions, or `*` alone (any version, the default). Parsed to the manifest's array, deduplicated.
 */
export const upgradeFromList = z
  .string()
  .transform((s) => [...new Set(s.split(',').map((v) => v.trim()))])
  .superRefine((list, ctx) => {
    if (list.some((v) => v === '')) ctx.addIssue({ code: 'custom', message: 'upgradeFrom: an empty entry (expected versions separated by commas, like 0.1.0,0.1.1, or * alone)' });
    else if (list.includes('*') && list.length > 1) ctx.addIssue({ code: 'custom', message: 'upgradeFrom: * means any version; give * alone or a list of versions' });
    else if (list.length > 256) ctx.addIssue({ code: 'custom', message: `upgradeFrom: at most 256 versions, got ${list.length}` });
    else {
      const bad = list.filter((v) => v !== '*' && !(UPGRADE_FROM_VERSION.test(v) && agentVersion.safeParse(v).success));
      if (bad.length) ctx.addIssue({ code: 'custom', message: `upgradeFrom: not a version like 0.1.0: ${bad.slice(0, 5).map((v) => JSON.stringify(v)).join(', ')}` });
    }
  });

export const agentManifestSchema = z
  .strictObject({
    v: z.literal(PROTOCOL_VERSION),
    kind: z.literal('agent'),
    version: agentVersion,
    platform: z.enum(AGENT_PLATFORMS),
    /** Its own sequence; a device keeps its own floor for it, apart from the model release floor. */
    agentSeq,
    artifact: agentArtifactSchema,
    /** Every regular file the tarball holds (directories are implied); checked after unpacking. */
    files: z.array(agentFileSchema).min(1).max(MAX_AGENT_FILES),
    /** The lowest protocol revision (compat.ts PROTOCOL_REVISION) the new agent speaks with the cloud. */
    minProtocolVersion: z.number().int().min(1).max(1000),
    /** Agent versions that may upgrade (or roll back) to this one; `*` = any. */
    upgradeFrom: z.array(z.union([agentVersion, z.literal('*')])).min(1).max(256),
    /** Set when this manifest re-issues an earlier version at a higher agentSeq (a rollback). */
    reissueOf: agentSeq.optional(),
    createdAt: isoTime,
    expiresAt: isoTime,
  })
  .refine((m) => m.artifact.chunks.length === Math.ceil(m.artifact.bytes / m.artifact.chunkSize), { message: 'chunk count must equal ceil(bytes / chunkSize)', path: ['artifact', 'chunks'] })
  .refine((m) => new Set(m.files.map((f) => f.path)).size === m.files.length, { message: 'file paths must be unique', path: ['files'] });
export type AgentManifest = z.infer<typeof agentManifestSchema>;

/** Payload of `devices/{id}/agent` (retained): the agent manifest and its detached signature. */
export const signedAgentManifestSchema = z.strictObject({ manifest: z.unknown(), signature: signatureSchema });
export type SignedAgentManifest = { manifest: AgentManifest; signature: z.infer<typeof signatureSchema> };
