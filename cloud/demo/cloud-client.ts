import type { DeviceInfo } from './options.js';
import { sleep } from './options.js';

/**
 * `fetch`, retried when a kept-alive connection was closed under it (`ECONNRESET`, undici's "other side
 * closed"): on a loaded machine a server can drop an idle socket just as the client reuses it, and the
 * request then never reached the server, so sending it again is safe.
 */
export async function fetchRetry(url: string, init?: RequestInit, attempts = 4): Promise<Response> {
  for (let i = 1; ; i++) {
    try {
      return await fetch(url, init);
    } catch (err) {
      const cause = (err as { cause?: { code?: string } }).cause;
      const stale = cause?.code === 'ECONNRESET' || cause?.code === 'UND_ERR_SOCKET';
      if (!stale || i >= attempts) throw err;
      await sleep(100 * i);
    }
  }
}

/** The demo's client of the cloud API (admin token), as a user's script would be. */
export interface CloudClient {
  get<T>(path: string): Promise<T>;
  send<T>(method: string, path: string, body?: unknown): Promise<{ status: number; body: T }>;
  bytes(path: string): Promise<Uint8Array>;
}

export function cloudClient(base: string, token: string): CloudClient {
  const auth = { authorization: `Bearer ${token}` };
  const call = async <T>(method: string, path: string, body?: unknown) => {
    const res = await fetchRetry(base + path, {
      method,
      headers: { ...auth, ...(body === undefined ? {} : { 'content-type': 'application/json' }) },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    const text = await res.text();
    return { status: res.status, body: (text ? JSON.parse(text) : null) as T };
  };
  return {
    async get<T>(path: string) {
      const r = await call<T>('GET', path);
      if (r.status !== 200) throw new Error(`GET ${path}: ${r.status} ${JSON.stringify(r.body)}`);
      return r.body;
    },
    send: call,
    async bytes(path: string) {
      const res = await fetchRetry(base + path, { headers: auth });
      if (res.status !== 200) throw new Error(`GET ${path}: ${res.status} ${await res.text()}`);
      return new Uint8Array(await res.arrayBuffer());
    },
  };
}

export interface RoundView {
  id: string;
  state: string;
  releaseSeq: number | null;
  exampleCount: number | null;
  error: string | null;
  startedAt: string | null;
  finishedAt: string | null;
  createdAt: string;
  progress: { phase?: string; detail?: string; epoch?: number; epochs?: number } | null;
  /** `cohorts`: each cohort line's outcome (issue 13, cloud/rounds/cohort-publish.ts cohortSummary). */
  metrics?: { cohorts?: { cohort: string; state: string; releaseSeq?: number }[] } | null;
}

/**
 * The release each device should serve after round `r`: its cohort's release of that round (cohort =
 * the device's shift in `--cohorts`), else what it served before (its cohort's student was refused by
 * the gate), else the base release.
 */
export function linesOf(r: RoundView, devices: readonly DeviceInfo[], cohorts: boolean, before: ReadonlyMap<string, number>): number[] {
  return devices.map((d) => {
    const own = cohorts ? r.metrics?.cohorts?.find((c) => c.cohort === d.shift && c.state === 'released')?.releaseSeq : undefined;
    return own ?? before.get(d.id) ?? r.releaseSeq!;
  });
}

/** How a wait polls: `check` throws when the demo is stopped, `status` reports progress. */
export interface WaitDeps {
  api: CloudClient;
  check: () => void;
  status: (line: string) => void;
  timeoutMs: number;
}

export const listRounds = async (api: CloudClient, model: string) => (await api.get<{ rounds: RoundView[] }>(`/v1/models/${model}/rounds`)).rounds;

/** Waits until the round leaves queued/running, with its progress as status lines. */
export async function waitRound({ api, check, status, timeoutMs }: WaitDeps, id: string, label: string): Promise<RoundView> {
  let last = '';
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    check();
    const r = await api.get<RoundView>(`/v1/rounds/${id}`);
    if (r.state !== 'queued' && r.state !== 'running') return r;
    const p = r.progress;
    const line = p ? `${label}: ${p.phase}${p.epoch !== undefined ? ` epoch ${p.epoch}/${p.epochs}` : ''}${p.detail ? ` — ${p.detail}` : ''}` : `${label}: ${r.state}`;
    if (line !== last) status(line);
    last = line;
    if (Date.now() > deadline) throw new Error(`round ${id} did not finish within ${timeoutMs / 1000} s`);
    await sleep(500);
  }
}

/** What a device's local API says it serves. */
export interface Serving {
  release: number;
  sha256: string;
}

export async function servingOn(apiUrl: string): Promise<Serving | null> {
  try {
    const r = await fetch(`${apiUrl}/v1/model`);
    return r.status === 200 ? ((await r.json()) as Serving) : null;
  } catch {
    return null;
  }
}

/**
 * Waits until every device serves `release` or later (their local APIs say so); returns when, and what
 * each serves. An array gives each device its own release (cohorts: each device's cohort line).
 */
export async function waitServing({ check, timeoutMs }: WaitDeps, devices: DeviceInfo[], release: number | readonly number[], logHint: string): Promise<{ at: number; serving: Serving[] }> {
  const deadline = Date.now() + timeoutMs;
  const want = (i: number) => (typeof release === 'number' ? release : release[i]!);
  for (;;) {
    check();
    const seen = await Promise.all(devices.map((d) => servingOn(d.apiUrl)));
    if (seen.every((s, i) => s !== null && s.release >= want(i))) return { at: Date.now(), serving: seen as Serving[] };
    if (Date.now() > deadline) throw new Error(`release ${release} not on every device after ${timeoutMs / 1000} s (serving: ${seen.map((s) => s?.release ?? null).join(', ')}); see ${logHint}`);
    await sleep(250);
  }
}
