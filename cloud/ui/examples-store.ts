import { and, desc, eq, gte, lte, type SQL } from 'drizzle-orm';
import type { StoreRegistry } from '../registry/open.js';

export interface ExampleFilter {
  model?: string;
  deviceId?: string;
  reason?: string;
  since?: string;
  until?: string;
  limit: number;
  offset: number;
}

export interface ExampleItem {
  id: string;
  deviceId: string;
  model: string | null;
  release: number | null;
  reason: string;
  studentOutput: number[];
  /** The feedback label, if one came with the example. */
  label: number | null;
  /** argmax of the teacher's logits, once a round computed them. */
  teacherClass: number | null;
  capturedAt: string;
  ingestedAt: string;
}

function argmaxF32(b: Buffer | null): number | null {
  if (!b || b.byteLength < 4) return null;
  let best = 0;
  for (let i = 1; i < b.byteLength / 4; i++) if (b.readFloatLE(i * 4) > b.readFloatLE(best * 4)) best = i;
  return best;
}

/**
 * The hard-example browser's reads (newest first, filtered by model, device, reason and capture time),
 * without the input tensors; `exampleInput` fetches one for its thumbnail.
 */
export async function listExamples(reg: StoreRegistry, f: ExampleFilter): Promise<{ items: ExampleItem[]; more: boolean }> {
  const { examples } = reg.t;
  const where: SQL[] = [];
  if (f.model) where.push(eq(examples.model, f.model));
  if (f.deviceId) where.push(eq(examples.deviceId, f.deviceId));
  if (f.reason) where.push(eq(examples.reason, f.reason));
  if (f.since) where.push(gte(examples.capturedAt, f.since));
  if (f.until) where.push(lte(examples.capturedAt, f.until));
  const rows = await reg.q
    .select({ id: examples.id, deviceId: examples.deviceId, model: examples.model, release: examples.releaseSeq, reason: examples.reason, studentOutput: examples.studentOutput, label: examples.label, teacherLogits: examples.teacherLogits, capturedAt: examples.capturedAt, ingestedAt: examples.ingestedAt })
    .from(examples)
    .where(and(...where))
    .orderBy(desc(examples.ingestedAt), desc(examples.id))
    .limit(f.limit + 1)
    .offset(f.offset);
  const items = rows.slice(0, f.limit).map(({ teacherLogits, studentOutput, ...r }) => ({ ...r, studentOutput: studentOutput as number[], teacherClass: argmaxF32(teacherLogits) }));
  return { items, more: rows.length > f.limit };
}

export async function exampleInput(reg: StoreRegistry, id: string): Promise<{ model: string | null; input: Buffer; sourceImage: Buffer | null } | undefined> {
  const { examples } = reg.t;
  const [row] = await reg.q.select({ model: examples.model, input: examples.input, sourceImage: examples.sourceImage }).from(examples).where(eq(examples.id, id));
  return row;
}
