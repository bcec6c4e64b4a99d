/**
 * Image inputs of the edge's local API (issue 11): PNG/JPEG bodies and base64 images in JSON, decoded
 * by sharp and preprocessed by the manifest's input.image, against a real ORT model with golden
 * outputs; and every malformed image answered 400 naming why, the daemon still serving afterwards.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { crc32 } from 'node:zlib';
import { Registry } from 'prom-client';
import sharp from 'sharp';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createLocalApi } from '../../../edge/api/app.js';
import { ModelHost } from '../../../edge/runtime/host.js';
import { manifestSchema, type ImageSpec } from '../../../shared/protocol/index.js';
import { denseModel, makeManifest, writeModel, type TinyModel } from '../../fixtures/onnx-models.js';
import { softmax } from './helpers.js';

const SPEC: ImageSpec = { height: 8, width: 8, channels: 3, layout: 'nchw', mean: [0.5, 0.4, 0.3], std: [0.2, 0.25, 0.3] };

let dir: string;
let host: ModelHost;
let numbersHost: ModelHost;
let model: TinyModel;
let app: ReturnType<typeof createLocalApi>;
let numbersApp: ReturnType<typeof createLocalApi>;
const seen: Float32Array[] = [];
const registry = new Registry();

/** 8×8 RGB pixels with a fixed pattern, and the model input the spec makes of them (nchw, normalised). */
const pixels = Uint8Array.from({ length: 8 * 8 * 3 }, (_, i) => (i * 37 + 11) % 256);
function expectedInput(px: Uint8Array, spec = SPEC): Float32Array {
  const out = new Float32Array(px.length);
  for (let p = 0; p < 64; p++) for (let c = 0; c < 3; c++) out[c * 64 + p] = (px[p * 3 + c]! / 255 - spec.mean[c]!) / spec.std[c]!;
  return out;
}
const png = () => sharp(Buffer.from(pixels), { raw: { width: 8, height: 8, channels: 3 } }).png().toBuffer();
const jpeg = (w: number, h: number) => sharp({ create: { width: w, height: h, channels: 3, background: '#3080c0' } }).jpeg().toBuffer();

/** A valid PNG whose IHDR is rewritten to declare `w × h` (CRC fixed up): the header of a decompression bomb. */
async function declaring(w: number, h: number): Promise<Buffer> {
  const b = Buffer.from(await png());
  b.writeUInt32BE(w, 16);
  b.writeUInt32BE(h, 20);
  b.writeUInt32BE(crc32(b.subarray(12, 29)), 29);
  return b;
}

function send(a: typeof app, body: Uint8Array | string | object, type: string, query = ''): Promise<Response> {
  const payload = body instanceof Uint8Array || typeof body === 'string' ? body : JSON.stringify(body);
  return Promise.resolve(a.request(`/v1/predict${query}`, { method: 'POST', headers: { 'content-type': type }, body: payload }));
}

async function expectError(res: Response, status: number, code: string, field?: string): Promise<string> {
  const body = (await res.json()) as { error: { code: string; message: string; field?: string } };
  expect(res.status, JSON.stringify(body)).toBe(status);
  expect(body.error.code).toBe(code);
  if (field !== undefined) expect(body.error.field).toBe(field);
  return body.error.message;
}

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'apprentice-image-api-'));
  model = denseModel({ sizes: [192, 5], seed: 9 });
  const plain = makeManifest(model, { shape: [192] });
  const manifest = manifestSchema.parse({ ...plain, input: { ...plain.input, image: SPEC } });
  const path = await writeModel(dir, model);
  host = new ModelHost();
  await host.activate(path, manifest);
  numbersHost = new ModelHost();
  await numbersHost.activate(path, plain);
  const deps = { metrics: new Registry(), feedback: () => ({ stored: true }), defaultMetrics: false, batching: false as const };
  app = createLocalApi({ ...deps, metrics: registry, host, onPrediction: (p) => seen.push(Float32Array.from(p.input)), limits: { maxImagePixels: 1_000_000 } });
  numbersApp = createLocalApi({ ...deps, metrics: new Registry(), host: numbersHost });
});
afterAll(async () => {
  await host.dispose();
  await numbersHost.dispose();
  await rm(dir, { recursive: true, force: true });
});

describe('POST /v1/predict with images', () => {
  it('a PNG body is decoded, normalised per channel into nchw, and answered with golden probabilities', async () => {
    const res = await send(app, await png(), 'image/png');
    expect(res.status).toBe(200);
    const body = (await res.json()) as { probabilities: number[]; release: number };
    const want = softmax(model.forward(expectedInput(pixels), 1));
    body.probabilities.forEach((p, i) => expect(p).toBeCloseTo(want[i]!, 5));
    // The selector sees the preprocessed tensor, the same the model saw.
    const last = seen[seen.length - 1]!;
    expectedInput(pixels).forEach((v, i) => expect(last[i]).toBeCloseTo(v, 5));
  });

  it('base64 images in JSON: image_b64 answers one object, images_b64 a batch, same answers as the body form', async () => {
    const b64 = (await png()).toString('base64');
    const one = (await (await send(app, { image_b64: b64, top_k: 2 }, 'application/json')).json()) as { index: number; top_k: unknown[] };
    expect(one.top_k).toHaveLength(2);
    const want = softmax(model.forward(expectedInput(pixels), 1));
    expect(one.index).toBe(want.indexOf(Math.max(...want)));
    const res = await send(app, { images_b64: [b64, (await jpeg(30, 20)).toString('base64')] }, 'application/json');
    expect(res.status).toBe(200);
    const batch = (await res.json()) as { predictions: { index: number }[] };
    expect(batch.predictions).toHaveLength(2);
    expect(batch.predictions[0]!.index).toBe(one.index);
  });

  it('a JPEG of another size and a grey PNG are resized and converted to the model channels', async () => {
    const r1 = await send(app, await jpeg(40, 24), 'image/jpeg', '?top_k=3');
    expect(r1.status).toBe(200);
    expect(((await r1.json()) as { top_k: unknown[] }).top_k).toHaveLength(3);
    const grey = await sharp(Buffer.alloc(16 * 16, 200), { raw: { width: 16, height: 16, channels: 1 } }).png().toBuffer();
    const r2 = await send(app, grey, 'image/png');
    expect(r2.status).toBe(200);
    // Grey 200 in every channel after conversion.
    const last = seen[seen.length - 1]!;
    for (let c = 0; c < 3; c++) expect(last[c * 64 + 5]).toBeCloseTo((200 / 255 - SPEC.mean[c]!) / SPEC.std[c]!, 2);
  });
});

describe('POST /v1/predict refuses bad images with a 400 naming why', () => {
  it('truncated PNG and truncated JPEG: undecodable_image', async () => {
    const p = await png();
    expect(await expectError(await send(app, p.subarray(0, p.length - 30), 'image/png'), 400, 'undecodable_image', 'body')).toMatch(/PNG/);
    const j = await jpeg(64, 48);
    await expectError(await send(app, j.subarray(0, j.length >> 1), 'image/jpeg'), 400, 'undecodable_image', 'body');
    await expectError(await send(app, p.subarray(0, 20), 'image/png'), 400, 'undecodable_image', 'body');
  });

  it('huge declared dimensions (decompression bomb header) and a real image past the limit: too_many_pixels, before decoding', async () => {
    expect(await expectError(await send(app, await declaring(100_000, 100_000), 'image/png'), 400, 'too_many_pixels', 'body')).toMatch(/100000×100000/);
    const big = await sharp({ create: { width: 1200, height: 1000, channels: 3, background: '#000' } }).png().toBuffer();
    expect(big.length).toBeLessThan(100_000); // small on the wire, 1.2 M pixels decoded
    await expectError(await send(app, big, 'image/png'), 400, 'too_many_pixels', 'body');
  });

  it('wrong type: JPEG bytes sent as image/png, text as image/jpeg, an unsupported Content-Type (415)', async () => {
    expect(await expectError(await send(app, await jpeg(8, 8), 'image/png'), 400, 'wrong_image_type', 'body')).toMatch(/JPEG image, but its type says image\/png/);
    await expectError(await send(app, 'GIF89a not really', 'image/jpeg'), 400, 'wrong_image_type', 'body');
    expect(await expectError(await send(app, await png(), 'image/gif'), 415, 'unsupported_media_type')).toMatch(/image\/png or image\/jpeg/);
  });

  it('bad base64 and bad image fields in JSON name the field', async () => {
    await expectError(await send(app, { image_b64: 'not base64!' }, 'application/json'), 400, 'invalid_input', 'image_b64');
    await expectError(await send(app, { images_b64: [(await png()).toString('base64'), 42] }, 'application/json'), 400, 'invalid_input', 'images_b64.1');
    await expectError(await send(app, { images_b64: [(await png()).toString('base64'), Buffer.from('hello').toString('base64')] }, 'application/json'), 400, 'wrong_image_type', 'images_b64.1');
    await expectError(await send(app, { images_b64: [] }, 'application/json'), 400, 'invalid_input', 'images_b64');
    await expectError(await send(app, { image_b64: (await png()).toString('base64'), input: [1] }, 'application/json'), 400, 'invalid_body');
    await expectError(await send(app, await png(), 'image/png', '?top_k=abc'), 400, 'invalid_body', 'top_k');
  });

  it('a model without input.image: not_an_image_model', async () => {
    expect(await expectError(await send(numbersApp, await png(), 'image/png'), 400, 'not_an_image_model')).toMatch(/takes numbers/);
    await expectError(await send(numbersApp, { image_b64: (await png()).toString('base64') }, 'application/json'), 400, 'not_an_image_model');
  });

  it('after every refusal the API still answers a good image; refusals are counted by reason', async () => {
    expect((await send(app, await png(), 'image/png')).status).toBe(200);
    const text = await registry.metrics();
    const count = (outcome: string) => Number(new RegExp(`apprentice_edge_images_total\\{outcome="${outcome}"\\} (\\d+)`).exec(text)?.[1] ?? 0);
    expect(count('too_many_pixels')).toBe(2);
    expect(count('undecodable')).toBe(3);
    expect(count('wrong_type')).toBe(3);
    expect(count('decoded')).toBeGreaterThanOrEqual(7);
  });
});
