import { randomUUID } from 'node:crypto';
import { Hono } from 'hono';
import type { Prediction } from '../runtime/host.js';
import type { ApiContext } from './context.js';
import { decodePredictBody, type DecodedPredict } from './decode.js';
import { ApiError, methodNotAllowed } from './errors.js';
import { decodeImageBody, decodeImages, imageFormatOf, jsonOrImage } from './image.js';
import { header, limitBody } from './middleware.js';
import { checkInputRange } from './range.js';
import { mediaType } from '../../shared/http/middleware.js';

interface TopK {
  index: number;
  label: string;
  probability: number;
}

interface ExampleAnswer {
  id: string;
  label: string;
  index: number;
  confidence: number;
  probabilities?: number[];
  top_k?: TopK[];
}

function topK(probs: Float32Array, labels: readonly string[], k: number): TopK[] {
  const idx = Array.from({ length: probs.length }, (_, i) => i).sort((a, b) => probs[b]! - probs[a]!);
  return idx.slice(0, k).map((i) => ({ index: i, label: labels[i] ?? String(i), probability: probs[i]! }));
}

/** Builds the per-example answers, remembers each for feedback and feeds the selector hook. */
function answer(ctx: ApiContext, req: DecodedPredict, result: Prediction, sources?: Uint8Array[]): ExampleAnswer[] {
  const { manifest } = result;
  const labels = manifest.labels;
  const classes = result.probs.length / req.n;
  const size = req.data.length / req.n;
  const at = ctx.clock();
  const out: ExampleAnswer[] = new Array(req.n);
  for (let r = 0; r < req.n; r++) {
    // Views, not copies: `recent` copies into its ring; the hook may keep them.
    const probs = req.n === 1 ? result.probs : result.probs.subarray(r * classes, (r + 1) * classes);
    const input = req.n === 1 ? req.data : req.data.subarray(r * size, (r + 1) * size);
    let best = 0;
    for (let j = 1; j < classes; j++) if (probs[j]! > probs[best]!) best = j;
    const id = randomUUID();
    const a: ExampleAnswer = { id, label: labels[best] ?? String(best), index: best, confidence: probs[best]! };
    if (req.topK !== undefined) a.top_k = topK(probs, labels, req.topK);
    else a.probabilities = Array.from(probs);
    out[r] = a;
    ctx.recent.remember(id, { input, probs, manifest, at });
    if (ctx.onPrediction) {
      try {
        ctx.onPrediction({ id, input, probs, manifest, ...(sources?.[r] ? { source: sources[r] } : {}) });
      } catch (err) {
        ctx.log.error({ err }, 'edge/api onPrediction hook failed');
      }
    }
  }
  return out;
}

/**
 * `POST /v1/predict`: one example (`input`, `image_b64`, a PNG/JPEG body, or `input_b64` without `count`)
 * answers one object, a batch (`inputs`, `images_b64`, or `input_b64` with `count`) answers
 * `predictions: [...]`; both carry model, release and latency_ms (time in the ORT run).
 */
export function predictRoutes(ctx: ApiContext): Hono {
  return new Hono()
    .post('/', jsonOrImage(), limitBody({ maxBytes: ctx.limits.maxBodyBytes }), async (c) => {
      const bytes = new Uint8Array(await c.req.arrayBuffer());
      const model = ctx.host.current();
      if (!model) throw new ApiError(503, 'no_model', 'no model is loaded yet');
      const format = imageFormatOf(mediaType(header(c, 'content-type')));
      const req = format ? await decodeImageBody(bytes, format, c.req.query('top_k'), model.manifest, ctx) : decodePredictBody(bytes, model.manifest, ctx.limits);
      if (req.images) req.data = await decodeImages(req.images.bytes, req.images.fields, model.manifest, ctx);
      try {
        checkInputRange(req.data, req.n, model.manifest, req.images ? 'image' : req.single ? 'input' : 'inputs');
      } catch (err) {
        ctx.metrics.outOfRange(req.n);
        ctx.log.debug({ err: (err as Error).message }, 'edge/api input out of range');
        throw err;
      }
      const result = await ctx.predictor.predict(req.data, req.n);
      ctx.metrics.predicted(req.n, result.latencyMs);
      // The images as received: an image model's hard example may carry its source (issue 11).
      const answers = answer(ctx, req, result, format ? [bytes] : req.images?.bytes);
      if (ctx.shadow) {
        try {
          ctx.shadow.observe(req.data, req.n, result);
        } catch (err) {
          ctx.log.error({ err }, 'edge/api shadow observe failed');
        }
      }
      const meta = { model: result.manifest.model, release: result.manifest.release, latency_ms: Math.round(result.latencyMs * 1000) / 1000 };
      return c.json(req.single ? { ...answers[0]!, ...meta } : { predictions: answers, ...meta });
    })
    .all('/', methodNotAllowed(['POST']));
}
