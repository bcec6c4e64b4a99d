import type { Logger } from '../../shared/log/index.js';

export interface LoginLimitOptions {
  /** Failed logins allowed per client address within `windowMs`; the next attempt is refused. Default 5. */
  maxFailures?: number;
  /** Default 60 s. */
  windowMs?: number;
  /** Client addresses remembered at once; past it the stalest is forgotten (logged and counted). Default 10,000. */
  maxClients?: number;
  now?: () => number;
  log: Logger;
  /** Counts an address forgotten because the table was full. */
  evicted?: () => void;
}

/**
 * Brute-force brake on the console login: per client address, at most `maxFailures` wrong admin tokens
 * within a sliding `windowMs`; after that every attempt (right token or not) is refused until the oldest
 * failure leaves the window, with the seconds to wait (Retry-After). A success clears the address. The
 * table is bounded: a flood of addresses evicts the stalest entries instead of growing without end.
 *
 * @example
 * const limit = loginLimiter({ log });
 * const wait = limit.blocked(addr); // seconds, or 0
 */
export function loginLimiter({ maxFailures = 5, windowMs = 60_000, maxClients = 10_000, now = Date.now, log, evicted = () => {} }: LoginLimitOptions) {
  /** Failure times per address, oldest first; Map order = least recently failed first. */
  const failures = new Map<string, number[]>();
  const recent = (addr: string): number[] => {
    const t = now();
    const kept = (failures.get(addr) ?? []).filter((at) => at > t - windowMs);
    if (kept.length) failures.set(addr, kept);
    else failures.delete(addr);
    return kept;
  };
  return {
    /** Seconds until `addr` may try again; 0 = it may. */
    blocked(addr: string): number {
      const kept = recent(addr);
      if (kept.length < maxFailures) return 0;
      return Math.max(1, Math.ceil((kept[kept.length - maxFailures]! + windowMs - now()) / 1000));
    },
    fail(addr: string): void {
      const kept = recent(addr);
      failures.delete(addr);
      failures.set(addr, [...kept, now()].slice(-maxFailures));
      if (failures.size > maxClients) {
        const stalest = failures.keys().next().value!;
        failures.delete(stalest);
        evicted();
        log.warn({ addr: stalest, maxClients }, 'ui/login-limit: table full, stalest address forgotten');
      }
    },
    succeed(addr: string): void {
      failures.delete(addr);
    },
    get size(): number {
      return failures.size;
    },
  };
}
export type LoginLimiter = ReturnType<typeof loginLimiter>;
