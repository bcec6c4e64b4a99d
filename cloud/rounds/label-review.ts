import { and, desc, eq, inArray } from 'drizzle-orm';
import type { StoreRegistry } from '../registry/open.js';
import { q } from '../registry/tx.js';

/**
 * Review of device labels (issue 10 item 5). Only `feedback` rows carry a label (ingest drops the
 * others). A feedback label the teacher contradicts with high confidence (by default probability
 * ≥ 0.9 on another class and < 0.05 on the given one) is put in quarantine: the example is not trained
 * on until the operator accepts it (`POST /v1/examples/quarantine/{id}/accept`) or drops it.
 */

export interface QuarantineThresholds {
  /** Teacher probability on some other class at or above which the label is suspect. */
  otherMin: number;
  /** ... while the teacher's probability on the given label is below this. */
  givenMax: number;
}

export const DEFAULT_QUARANTINE: QuarantineThresholds = { otherMin: 0.9, givenMax: 0.05 };

/** Softmax of one row of logits (stable). */
export function softmax(logits: ArrayLike<number>): Float64Array {
  let max = -Infinity;
  for (let i = 0; i < logits.length; i++) max = Math.max(max, logits[i]!);
  const out = new Float64Array(logits.length);
  let sum = 0;
  for (let i = 0; i < logits.length; i++) sum += out[i] = Math.exp(logits[i]! - max);
  for (let i = 0; i < out.length; i++) out[i]! /= sum;
  return out;
}

/** The teacher's view of a label: its top class, that class's probability, and the given label's. */
export function teacherView(logits: ArrayLike<number>, label: number): { teacherClass: number; teacherProb: number; labelProb: number } {
  const p = softmax(logits);
  let top = 0;
  for (let i = 1; i < p.length; i++) if (p[i]! > p[top]!) top = i;
  return { teacherClass: top, teacherProb: p[top]!, labelProb: p[label] ?? 0 };
}

/** True when the teacher contradicts `label` with high confidence. */
export function contradicts(logits: ArrayLike<number>, label: number, t: QuarantineThresholds = DEFAULT_QUARANTINE): boolean {
  const v = teacherView(logits, label);
  return v.teacherClass !== label && v.teacherProb >= t.otherMin && v.labelProb < t.givenMax;
}

/** Records the review of freshly checked labels: `ok` or `quarantined`. */
export async function recordLabelReview(reg: StoreRegistry, ok: readonly string[], quarantined: readonly string[]): Promise<void> {
  if (!ok.length && !quarantined.length) return;
  await reg.tx(function* (tx, { examples }) {
    for (let i = 0; i < ok.length; i += 500) yield* q(tx.update(examples).set({ labelState: 'ok' }).where(inArray(examples.id, ok.slice(i, i + 500))));
    for (let i = 0; i < quarantined.length; i += 500) yield* q(tx.update(examples).set({ labelState: 'quarantined' }).where(inArray(examples.id, quarantined.slice(i, i + 500))));
  });
}

export interface QuarantinedExample {
  id: string;
  deviceId: string;
  model: string | null;
  label: number;
  /** The teacher's class and probabilities, when its logits are stored. */
  teacherClass: number | null;
  teacherProb: number | null;
  labelProb: number | null;
  capturedAt: string;
  ingestedAt: string;
}

/** Quarantined feedback labels, newest first. */
export async function listQuarantined(reg: StoreRegistry, { model, limit = 100 }: { model?: string; limit?: number } = {}): Promise<QuarantinedExample[]> {
  const { examples } = reg.t;
  const rows = await reg.q
    .select({ id: examples.id, deviceId: examples.deviceId, model: examples.model, label: examples.label, teacherLogits: examples.teacherLogits, capturedAt: examples.capturedAt, ingestedAt: examples.ingestedAt })
    .from(examples)
    .where(and(eq(examples.labelState, 'quarantined'), model === undefined ? undefined : eq(examples.model, model)))
    .orderBy(desc(examples.ingestedAt), desc(examples.id))
    .limit(limit);
  return rows.map(({ teacherLogits, ...r }) => {
    const label = r.label ?? -1;
    const z = teacherLogits && teacherLogits.byteLength % 4 === 0 && teacherLogits.byteLength > 0 ? new Float32Array(new Uint8Array(teacherLogits).buffer) : undefined;
    const v = z ? teacherView(z, label) : undefined;
    return { ...r, label, teacherClass: v?.teacherClass ?? null, teacherProb: v?.teacherProb ?? null, labelProb: v?.labelProb ?? null };
  });
}

/** Accepts a quarantined label (it is trained on from the next round). False when `id` is not in quarantine. */
export async function acceptQuarantined(reg: StoreRegistry, id: string): Promise<boolean> {
  const { examples } = reg.t;
  const done = await reg.q.update(examples).set({ labelState: 'accepted' }).where(and(eq(examples.id, id), eq(examples.labelState, 'quarantined'))).returning({ id: examples.id });
  return done.length === 1;
}

/** Drops a quarantined example (deleted: it is never trained on). False when `id` is not in quarantine. */
export async function dropQuarantined(reg: StoreRegistry, id: string): Promise<boolean> {
  const { examples } = reg.t;
  const done = await reg.q.delete(examples).where(and(eq(examples.id, id), eq(examples.labelState, 'quarantined'))).returning({ id: examples.id });
  return done.length === 1;
}
