import { seededRandom } from '../../fixtures/onnx-models.js';

/**
 * A tiny seeded generator for the fuzz suite (no fast-check dependency): random JSON, junk bytes, and
 * mutations of a valid document, the cases that find holes in strict schemas (a key dropped, added,
 * renamed; a value of another type; a number at the edges; a string that is too long or not ASCII).
 * Every run with one seed makes the same cases, so a failure names its case index and repeats.
 */
export class Gen {
  private readonly rand: () => number;

  constructor(readonly seed: number) {
    this.rand = seededRandom(seed);
  }

  float(): number {
    return this.rand();
  }

  int(n: number): number {
    return Math.floor(this.rand() * n);
  }

  pick<T>(xs: readonly T[]): T {
    return xs[this.int(xs.length)]!;
  }

  chance(p: number): boolean {
    return this.rand() < p;
  }

  str(max = 20): string {
    const chars = 'abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789+/=-_:.!@#$%^&*(){}[]"\\ \n\t\u0000\u00e9\u4e2d\ud83d\ude00';
    return Array.from({ length: this.int(max + 1) }, () => chars[this.int(chars.length)]).join('');
  }

  /** `str` made well-formed UTF-16 (a lone surrogate becomes U+FFFD), e.g. for `encodeURIComponent`. */
  text(max = 20): string {
    return Buffer.from(this.str(max), 'utf8').toString('utf8');
  }

  junk(max = 512): Buffer {
    return Buffer.from(Array.from({ length: this.int(max + 1) }, () => this.int(256)));
  }

  /** A value of an awkward kind: edge numbers, wrong types, huge strings, prototype keys. */
  odd(): unknown {
    return this.pick<() => unknown>([
      () => null, () => true, () => 0, () => -1, () => 1.5, () => 2 ** 53, () => Number.MAX_SAFE_INTEGER + 2, () => -1e308, () => 1e308,
      () => '', () => this.str(), () => 'x'.repeat(5000 + this.int(5000)), () => [], () => ({}), () => [this.str()], () => ({ __proto__: { admin: true } }),
      () => '2026-13-45T99:99:99Z', () => 'AAAA', () => '!!!', () => this.json(),
    ])();
  }

  json(depth = 0): unknown {
    switch (depth > 2 ? this.int(5) : this.int(7)) {
      case 0: return this.rand() * 1e9 - 5e8;
      case 1: return this.str();
      case 2: return this.pick([true, false, null]);
      case 3: return this.int(100);
      case 4: return this.int(2) ? this.str(3) : -this.int(10);
      case 5: return Array.from({ length: this.int(4) }, () => this.json(depth + 1));
      default: return Object.fromEntries(Array.from({ length: this.int(4) }, () => [this.str(6), this.json(depth + 1)]));
    }
  }

  /**
   * A copy of `doc` with 1–3 mutations at random paths, never equal to it as JSON. A mutation may still
   * leave a document its schema accepts (e.g. an optional field dropped): callers judge by what a
   * mutation can and cannot keep valid (a signature cannot survive one).
   */
  mutate<T>(doc: T): unknown {
    const before = JSON.stringify(doc);
    for (let attempt = 0; ; attempt++) {
      let out: unknown = structuredClone(doc);
      const n = 1 + this.int(3);
      for (let i = 0; i < n; i++) out = this.mutateOnce(out);
      // A mutation that changed nothing JSON can see is no case (e.g. "" appended).
      if (JSON.stringify(out) !== before || attempt > 20) return out;
    }
  }

  private mutateOnce(v: unknown): unknown {
    if (Array.isArray(v)) {
      if (v.length === 0 || this.chance(0.2)) return this.pick([() => [...v, this.odd()], () => this.odd(), () => []])();
      const i = this.int(v.length);
      const copy = [...v];
      copy[i] = this.mutateOnce(copy[i]);
      return this.chance(0.1) ? copy.concat(copy) : copy;
    }
    if (v !== null && typeof v === 'object') {
      const keys = Object.keys(v);
      const o = { ...(v as Record<string, unknown>) };
      if (keys.length === 0 || this.chance(0.15)) {
        o[this.pick(['extra', 'admin', '__proto__', 'constructor', this.str(6)])] = this.odd();
        return o;
      }
      const k = this.pick(keys);
      if (this.chance(0.2)) {
        delete o[k];
        return o;
      }
      o[k] = this.chance(0.5) ? this.mutateOnce(o[k]) : this.odd();
      return o;
    }
    if (typeof v === 'string') return this.pick([() => '', () => v + this.str(3), () => v.slice(0, this.int(v.length)), () => v.toUpperCase(), () => this.odd()])();
    if (typeof v === 'number') return this.pick([() => -v, () => v + 1, () => v * 1e12, () => 0.5, () => String(v), () => this.odd()])();
    return this.odd();
  }
}
