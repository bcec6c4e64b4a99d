import { buildArtifactDescriptor } from '../../shared/manifest/artifact.js';
import { manifestSchema, type InputSpec, type Manifest } from '../../shared/protocol/schemas.js';

/** Step 6 of a round: the release manifest, before signing. Pure, so tests can build one directly. */
export interface ReleaseManifestInput {
  model: string;
  seq: number;
  parentSeq: number | null;
  inputSpec: InputSpec;
  /** What the artifact outputs; default logits (every distilled student ends in logits). */
  outputKind?: 'logits' | 'probs';
  labels: string[];
  teacherId: string;
  artifact: Uint8Array;
  quantization: 'int8' | 'fp32';
  chunkSize: number;
  /** Public base URL of the cloud API; the manifest then names `${base}/v1/artifacts/${sha256}`. */
  publicBaseUrl?: string;
  /** Only finite numbers are kept (the manifest schema refuses anything else). */
  metrics: Record<string, unknown>;
  exampleCount: number;
  roundId?: string;
  /** The cohort of a cohort line's release (issue 13); null or absent: the base line. */
  cohort?: string | null;
  /** Set for a model trained elsewhere and uploaded (lineage.source). */
  source?: 'uploaded';
  createdAt: Date;
  validityDays: number;
  /** One holdout example and the shipped artifact's own ORT output for it, at batch 1. */
  selfTest: { input: Float32Array; expected: Float32Array; tolerance: number };
}

/** The device-authenticated, content-addressed HTTP source of an artifact (`GET /v1/artifacts/{sha256}`). */
export function releaseArtifactUrl(publicBaseUrl: string, sha256: string): string {
  return `${publicBaseUrl.replace(/\/+$/, '')}/v1/artifacts/${sha256}`;
}

export function numericMetrics(metrics: Record<string, unknown>): Record<string, number> {
  const out: Record<string, number> = {};
  for (const [k, v] of Object.entries(metrics)) if (typeof v === 'number' && Number.isFinite(v)) out[k] = v;
  return out;
}

/** Builds and validates the manifest (throws a ZodError if a field is out of its schema). */
export function buildReleaseManifest(i: ReleaseManifestInput): Manifest {
  const classes = i.labels.length;
  const artifact = buildArtifactDescriptor(i.artifact, { quantization: i.quantization, chunkSize: i.chunkSize });
  const manifest: Manifest = {
    v: 1,
    model: i.model,
    release: i.seq,
    artifact: { ...artifact, ...(i.publicBaseUrl ? { url: releaseArtifactUrl(i.publicBaseUrl, artifact.sha256) } : {}) },
    input: i.inputSpec,
    output: { kind: i.outputKind ?? 'logits', classes },
    labels: i.labels,
    teacher: { id: i.teacherId },
    metrics: numericMetrics(i.metrics),
    lineage: { exampleCount: i.exampleCount, ...(i.roundId ? { round: i.roundId } : {}), ...(i.source ? { source: i.source } : {}) },
    parent: i.parentSeq,
    ...(i.cohort ? { cohort: i.cohort } : {}),
    createdAt: i.createdAt.toISOString(),
    expiresAt: new Date(i.createdAt.getTime() + i.validityDays * 86_400_000).toISOString(),
    selfTest: { input: Array.from(i.selfTest.input), expected: Array.from(i.selfTest.expected), tolerance: i.selfTest.tolerance },
  };
  return manifestSchema.parse(manifest);
}
