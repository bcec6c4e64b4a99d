import type { Hono } from 'hono';
import { z } from 'zod';
import { errorBodySchema } from './errors.js';
import { routeMeta, type RouteDoc, type RouteMeta, type ValidationTarget } from './middleware.js';

/**
 * The OpenAPI 3.1 document, derived from the app itself: every registered route (hono's `app.routes`),
 * its `describeRoute()` doc, and the zod schemas of its `validate()` middleware turned into JSON Schema
 * 2020-12 (OpenAPI 3.1's dialect) by `z.toJSONSchema`. Nothing is written twice, so the document cannot
 * drift from what the routes accept.
 */
type JsonSchema = Record<string, unknown>;
type Operation = Record<string, unknown>;

/** hono's marker for a handler wrapped by a sub-app's own onError (utils/constants COMPOSED_HANDLER). */
const COMPOSED_HANDLER = '__COMPOSED_HANDLER';
const ERROR_REF = { $ref: '#/components/schemas/Error' };

function toJsonSchema(schema: z.ZodType, io: 'input' | 'output'): JsonSchema {
  return schema === errorBodySchema ? ERROR_REF : rawJsonSchema(schema, io);
}

function rawJsonSchema(schema: z.ZodType, io: 'input' | 'output'): JsonSchema {
  const { $schema: _drop, ...rest } = z.toJSONSchema(schema, { io, unrepresentable: 'any', target: 'draft-2020-12' }) as JsonSchema;
  return rest;
}

/** `/v1/devices/:id` → `/v1/devices/{id}` (also `:seq{[0-9]+}` → `{seq}`). */
export function openApiPath(path: string): string {
  return path.replace(/:([A-Za-z0-9_]+)(\{[^}]*\})?/g, '{$1}');
}

function parameters(target: Extract<ValidationTarget, 'query' | 'param'>, schema: z.ZodType): Operation[] {
  const json = toJsonSchema(schema, 'input');
  const props = (json.properties ?? {}) as Record<string, JsonSchema>;
  const required = new Set((json.required ?? []) as string[]);
  return Object.entries(props).map(([name, s]) => {
    const { description, ...rest } = s;
    return { name, in: target === 'param' ? 'path' : 'query', required: target === 'param' || required.has(name), schema: rest, ...(description ? { description } : {}) };
  });
}

function operationId(method: string, path: string): string {
  const words = path
    .split('/')
    .filter((p) => p && p !== 'v1')
    .map((p) => (p.startsWith(':') ? `by-${p.slice(1).replace(/\{.*$/, '')}` : p));
  return [method.toLowerCase(), ...words].join('-').replace(/[-.]+([a-z0-9])/gi, (_, ch: string) => ch.toUpperCase());
}

function operation(method: string, path: string, metas: RouteMeta[]): Operation {
  const doc = metas.find((m): m is Extract<RouteMeta, { kind: 'doc' }> => m.kind === 'doc')?.doc ?? ({ summary: `${method} ${path}`, responses: { 200: { description: 'OK' } } } satisfies RouteDoc);
  const op: Operation = { operationId: operationId(method, path), summary: doc.summary, tags: [path.split('/').filter(Boolean)[path.startsWith('/v1/') ? 1 : 0] ?? 'service'] };
  if (doc.description) op.description = doc.description;
  const params: Operation[] = [];
  const responses: Record<string, Operation> = {};
  for (const m of metas) {
    if (m.kind !== 'validate') continue;
    if (m.target === 'json') {
      op.requestBody = { required: !m.optional, content: { 'application/json': { schema: toJsonSchema(m.schema, 'input') } } };
      responses['400'] = { description: 'malformed JSON (invalid_json) or a body that does not match (invalid_body, naming the field)', content: { 'application/json': { schema: ERROR_REF } } };
      responses['413'] = { description: 'body too large', content: { 'application/json': { schema: ERROR_REF } } };
      responses['415'] = { description: 'Content-Type is not application/json', content: { 'application/json': { schema: ERROR_REF } } };
    } else {
      params.push(...parameters(m.target, m.schema));
      responses['400'] ??= { description: `invalid ${m.target === 'param' ? 'path parameter' : 'query parameter'} (naming the field)`, content: { 'application/json': { schema: ERROR_REF } } };
    }
  }
  if (params.length) op.parameters = params;
  for (const [status, r] of Object.entries(doc.responses)) {
    responses[status] = {
      description: r.description,
      ...(r.schema ? { content: { 'application/json': { schema: toJsonSchema(r.schema, 'output') } } } : r.contentType ? { content: { [r.contentType]: { schema: { type: 'string', format: 'binary' } } } } : {}),
    };
  }
  if (doc.public) op.security = [];
  else responses['401'] = { description: 'missing or wrong bearer token', content: { 'application/json': { schema: ERROR_REF } } };
  op.responses = Object.fromEntries(Object.entries(responses).sort(([a], [b]) => Number(a) - Number(b)));
  return op;
}

/** Builds the document from a fully assembled app. */
export function buildOpenApi(app: Hono, { title = 'Apprentice cloud API', version = '1' }: { title?: string; version?: string } = {}): Record<string, unknown> {
  const ops = new Map<string, { method: string; path: string; metas: RouteMeta[] }>();
  for (const r of app.routes) {
    if (r.method === 'ALL' || r.path.includes('*')) continue;
    const key = `${r.method} ${r.path}`;
    let entry = ops.get(key);
    if (!entry) ops.set(key, (entry = { method: r.method, path: r.path, metas: [] }));
    const handler = r.handler as unknown as Record<string, unknown>;
    const meta = routeMeta(r.handler) ?? routeMeta(handler[COMPOSED_HANDLER]);
    if (meta) entry.metas.push(meta);
  }
  const paths: Record<string, Record<string, Operation>> = {};
  for (const { method, path, metas } of ops.values()) {
    const p = openApiPath(path);
    (paths[p] ??= {})[method.toLowerCase()] = operation(method, path, metas);
  }
  return {
    openapi: '3.1.0',
    info: { title, version, description: 'Admin API of the Apprentice cloud. Every error is `{ "error": { "code", "message", "field"? } }`.' },
    jsonSchemaDialect: 'https://json-schema.org/draft/2020-12/schema',
    security: [{ bearer: [] }],
    paths: Object.fromEntries(Object.entries(paths).sort(([a], [b]) => a.localeCompare(b))),
    components: {
      securitySchemes: { bearer: { type: 'http', scheme: 'bearer', description: 'the admin token' } },
      schemas: { Error: rawJsonSchema(errorBodySchema, 'output') },
    },
  };
}
