import type { ApiContext } from './context.js';

/**
 * The one count of uploads in progress on an API (ONNX model uploads and agent pushes): each holds a temp
 * file of up to api.maxUploadBytes and parses or inspects it, so `api.maxConcurrentUploads` bounds both
 * routes together, not each on its own.
 */
const inFlight = new WeakMap<ApiContext, { n: number }>();

export function uploadSlots(ctx: ApiContext): { n: number } {
  let s = inFlight.get(ctx);
  if (!s) inFlight.set(ctx, (s = { n: 0 }));
  return s;
}
