import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { MqttClient } from 'mqtt';
import { keySetExpired, releaseKeysOf, verifyKeySet, type KeySetVerdict, type TrustedKey } from '../../shared/manifest/index.js';
import { silentLogger, type Logger } from '../../shared/log/index.js';
import { signedKeySetSchema, keySetSchema, topics, type KeySet, type SignedKeySet, type Status } from '../../shared/protocol/index.js';
import { writeFileAtomic } from './fsutil.js';
import type { TimeFloor } from './time-floor.js';

/** How long after a connect a manifest from an unknown key waits for the key set (issue 10). */
export const KEYSET_WAIT_MS = 30_000;

/** The accepted key set, as received (signatures included), in the data dir. */
export const TRUST_FILE = 'trust.json';

export class TrustStoreError extends Error {
  override readonly name = 'TrustStoreError';
}

export interface TrustStoreOptions {
  dataDir: string;
  /** edge.json `trustedKeys`: the release keys until a key set is accepted, and the bootstrap signers. */
  trustedKeys: readonly TrustedKey[];
  /** A provisioned root (bundle), if any. */
  rootKey?: TrustedKey;
  /** edge.json `rootKeyId`: pins the root a bootstrap may install. */
  rootKeyId?: string;
  log?: Logger;
  now?: () => Date;
  /** Raised to an accepted key set's `createdAt` (issue 10, time without a clock). */
  timeFloor?: TimeFloor;
}

export type ApplyOutcome = KeySetVerdict | { ok: 'unchanged'; version: number } | { ok: 'ignored'; detail: string };

/**
 * The device's root of trust (issue 10, DESIGN.md "Trust"): which keys may sign releases. Before any
 * key set it is edge.json's `trustedKeys`; after, the live (not revoked) keys of the newest accepted
 * key set, which is persisted so a restart keeps it. A key set arrives retained on `trust/keyset` at
 * every connect: the same version again is `unchanged`, an older one is refused.
 *
 * @example
 * const trust = await TrustStore.open({ dataDir, trustedKeys: config.trustedKeys });
 * const updates = await UpdateManager.create({ ..., trustedKeys: () => trust.trustedKeys() });
 */
export class TrustStore {
  private current: SignedKeySet | undefined;
  private readonly log: Logger;
  private readonly now: () => Date;
  private readonly path: string;

  private constructor(private readonly opts: TrustStoreOptions) {
    this.log = opts.log ?? silentLogger;
    this.now = opts.now ?? (() => new Date());
    this.path = join(opts.dataDir, TRUST_FILE);
  }

  /** Loads the persisted key set; a corrupt file is an error (the operator must look), a missing one is none. */
  static async open(opts: TrustStoreOptions): Promise<TrustStore> {
    const s = new TrustStore(opts);
    let text: string | undefined;
    try {
      text = await readFile(s.path, 'utf8');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
    }
    if (text !== undefined) {
      const env = signedKeySetSchema.safeParse(JSON.parse(text));
      const ks = env.success ? keySetSchema.safeParse(env.data.keyset) : undefined;
      if (!env.success || !ks?.success) throw new TrustStoreError(`${s.path}: not a key set; remove it to bootstrap again from trustedKeys`);
      s.current = { keyset: ks.data, signatures: env.data.signatures };
    }
    return s;
  }

  get keyset(): KeySet | undefined {
    return this.current?.keyset;
  }

  /** Keys a manifest may be signed with now. */
  trustedKeys(): readonly TrustedKey[] {
    return this.current ? releaseKeysOf(this.current.keyset) : this.opts.trustedKeys;
  }

  /** For `status.trust`. `at` should be max(clock, time floor). */
  state(at: Date = this.now()): NonNullable<Status['trust']> {
    const ks = this.current?.keyset;
    if (!ks) return { keysetVersion: null, state: 'trusted_keys' };
    return { keysetVersion: ks.version, state: keySetExpired(ks, at) ? 'trust_stale' : 'current' };
  }

  /** Verifies and, when newer and trusted, persists a `trust/keyset` payload. Never throws for bad input. */
  async apply(payload: Buffer): Promise<ApplyOutcome> {
    if (payload.byteLength === 0) return { ok: 'ignored', detail: 'key set cleared' };
    const held = this.current?.keyset;
    const verdict = verifyKeySet(payload, { current: held, root: this.opts.rootKey, bootstrapKeys: this.opts.trustedKeys, rootKeyId: this.opts.rootKeyId });
    if (!verdict.ok) {
      if (verdict.reason === 'stale_keyset' && held && this.sameAsHeld(payload)) return { ok: 'unchanged', version: held.version };
      this.log.warn({ reason: verdict.reason, detail: verdict.detail.slice(0, 300), held: held?.version ?? null }, 'trust/keyset-refused');
      return verdict;
    }
    await writeFileAtomic(this.path, JSON.stringify(verdict.signed));
    this.current = verdict.signed;
    await this.opts.timeFloor?.observe(verdict.keyset.createdAt);
    this.log.info({ version: verdict.keyset.version, how: verdict.how, root: verdict.keyset.root.keyId, keys: verdict.keyset.keys.map((k) => k.keyId), revoked: verdict.keyset.revoked.map((r) => r.keyId) }, 'trust/keyset-accepted');
    return verdict;
  }

  /**
   * The key set a provisioning bundle carries (edge.json `keyset`/`keysetFile`), applied at start exactly
   * like one from `trust/keyset`: verified under the provisioned root (or as a bootstrap from
   * trustedKeys). One not newer than the held key set is ignored; one that does not verify throws
   * TrustStoreError (a tampered bundle must stop the start, not be skipped quietly).
   */
  async applyBundled(signed: unknown, source = 'keyset'): Promise<ApplyOutcome> {
    const o = await this.apply(Buffer.from(JSON.stringify(signed ?? null)));
    if (o.ok !== false) return o;
    if (o.reason === 'stale_keyset') {
      this.log.info({ source, held: this.current?.keyset.version }, 'trust/bundled-keyset-older: the held key set stays');
      return { ok: 'ignored', detail: o.detail };
    }
    throw new TrustStoreError(`${source}: the provisioned key set is refused (${o.reason}): ${o.detail}`);
  }

  private sameAsHeld(payload: Buffer): boolean {
    try {
      const env = signedKeySetSchema.parse(JSON.parse(payload.toString('utf8')));
      return JSON.stringify(env.keyset) === JSON.stringify(this.current?.keyset) || (env.keyset as { version?: unknown }).version === this.current?.keyset.version;
    } catch {
      return false;
    }
  }
}

/**
 * Feeds the retained `trust/keyset` into a TrustStore: subscribes on every connect (clean sessions,
 * resubscribe off), applies each message, calls `onChange` after an accepted one.
 */
export class KeySetFollower {
  private readonly topic = topics.keyset();
  private readonly log: Logger;
  private chain: Promise<unknown> = Promise.resolve();
  /** When the current connection came up (ms, the follower's clock); undefined while not connected yet. */
  private connectedAt: number | undefined;
  private seenSinceConnect = false;
  private waiters: Array<() => void> = [];

  constructor(private readonly deps: { client: MqttClient; trust: TrustStore; onChange?: () => void; log?: Logger; clock?: () => number }) {
    this.log = deps.log ?? silentLogger;
  }

  /**
   * After a rotation a returning device may get its retained `desired` before the new key set (issue 10):
   * resolves once a key set message of this connection has been applied, or `maxMs` after the connect
   * (at once when that has passed or nothing is connected). The update pipeline waits on it before
   * refusing a manifest as `unknown_key`.
   */
  keySetSettled(maxMs = KEYSET_WAIT_MS): Promise<void> {
    const now = (this.deps.clock ?? Date.now)();
    if (this.seenSinceConnect || this.connectedAt === undefined || now - this.connectedAt >= maxMs) return Promise.resolve();
    return new Promise<void>((resolve) => {
      const timer = setTimeout(done, this.connectedAt! + maxMs - now);
      timer.unref?.();
      const self = this;
      function done(): void {
        clearTimeout(timer);
        self.waiters = self.waiters.filter((w) => w !== done);
        resolve();
      }
      this.waiters.push(done);
    });
  }

  start(): void {
    this.deps.client.on('connect', this.onConnect);
    this.deps.client.on('message', this.onMessage);
    if (this.deps.client.connected) this.onConnect();
  }

  stop(): void {
    this.deps.client.removeListener('connect', this.onConnect);
    this.deps.client.removeListener('message', this.onMessage);
  }

  /** Resolves when every message received so far has been applied (tests). */
  idle(): Promise<void> {
    return this.chain.then(() => undefined);
  }

  private readonly onConnect = (): void => {
    this.connectedAt = (this.deps.clock ?? Date.now)();
    this.seenSinceConnect = false;
    this.deps.client.subscribe(this.topic, { qos: 1 }, (err, granted) => {
      if (err) this.log.debug({ err: err.message }, 'trust/subscribe-interrupted');
      else if (granted?.some((g) => g.qos === 128)) this.log.warn({ topic: this.topic }, 'trust/subscribe-refused: the broker ACL predates the key set');
    });
  };

  private readonly onMessage = (topic: string, payload: Buffer): void => {
    if (topic !== this.topic) return;
    // One at a time: two versions arriving together must be checked against each other in order.
    this.chain = this.chain
      .then(() => this.deps.trust.apply(payload))
      .then((o) => {
        if (o.ok === true) this.deps.onChange?.();
      })
      .catch((err: unknown) => this.log.error({ err }, 'trust/apply-failed'))
      .finally(() => {
        this.seenSinceConnect = true;
        for (const w of [...this.waiters]) w();
      });
  };
}
