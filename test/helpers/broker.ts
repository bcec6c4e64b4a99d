/**
 * MQTT brokers for tests (STYLE.md 10: "MQTT against real brokers — the embedded aedes always,
 * Mosquitto where the binary exists"). Every MQTT test in the repo starts its brokers from here.
 *
 * @example
 * import { brokerMatrix, waitFor } from '../../helpers/broker.js';
 *
 * describe.each(brokerMatrix())('status over $name', ({ start, features }) => {
 *   let broker: TestBroker;
 *   beforeAll(async () => { broker = await start(); });
 *   afterAll(() => broker.stop());
 *   it('reconnects', async () => { ...; await broker.restart(); ... });
 * });
 */
import { startAedes } from './aedes.js';
import {
  MosquittoMissingError,
  REQUIRE_MOSQUITTO_ENV,
  missingMosquittoReason,
  mosquittoAvailable,
  mosquittoRequired,
  startMosquitto,
} from './mosquitto.js';

export { startAedes, type AedesBroker, type StartAedesOptions } from './aedes.js';
export {
  startMosquitto,
  mosquittoAvailable,
  mosquittoPath,
  mosquittoRequired,
  findExecutable,
  missingMosquittoReason,
  MosquittoMissingError,
  MosquittoStartError,
  REQUIRE_MOSQUITTO_ENV,
  type MosquittoBroker,
  type StartMosquittoOptions,
} from './mosquitto.js';
export { freePort, canConnect, waitFor, sleep, WaitForTimeoutError, type WaitForOptions } from './net.js';

export type BrokerKind = 'aedes' | 'mosquitto';

/** What every test broker offers, whichever implementation is behind it. */
export interface TestBroker {
  readonly kind: BrokerKind;
  /** `mqtt://127.0.0.1:<port>` */
  readonly url: string;
  readonly port: number;
  /** Drops every connection and comes back on the same port (reconnect tests). */
  restart(): Promise<void>;
  /** Idempotent. */
  stop(): Promise<void>;
}

/** Options every broker in the matrix understands. */
export interface MatrixStartOptions {
  port?: number;
  /** Retained messages and persistent sessions survive `restart()`. Default false. */
  persistent?: boolean;
}

export interface BrokerCase {
  readonly name: BrokerKind;
  /** What the protocol may use on this broker (DESIGN.md "MQTT": MQTT 5 only behind a switch). */
  readonly features: { readonly mqtt5: boolean; readonly sharedSubscriptions: boolean };
  start(opts?: MatrixStartOptions): Promise<TestBroker>;
}

const reported = new Set<string>();
function reportOnce(reason: string): void {
  if (reported.has(reason)) return;
  reported.add(reason);
  console.warn(`[test/helpers/broker] ${reason}`);
}

function missingError(): MosquittoMissingError {
  return new MosquittoMissingError(`${missingMosquittoReason()}; ${REQUIRE_MOSQUITTO_ENV}=1 makes that a failure`);
}

/**
 * True when Mosquitto tests should be skipped (binary missing, not required); prints why once.
 * Under APPRENTICE_REQUIRE_MOSQUITTO=1 it returns false, so the tests run and fail on start.
 *
 * @example
 * describe.skipIf(skipWithoutMosquitto())('mosquitto ACL', () => { ... });
 */
export function skipWithoutMosquitto(): boolean {
  if (mosquittoAvailable() || mosquittoRequired()) return false;
  reportOnce(`skipping Mosquitto tests: ${missingMosquittoReason()}`);
  return true;
}

/**
 * Inside a test: skips it (with the reason) when Mosquitto is missing, or throws under
 * APPRENTICE_REQUIRE_MOSQUITTO=1.
 *
 * @example
 * it('works on mosquitto', async (ctx) => { requireMosquittoOrSkip(ctx); ... });
 */
export function requireMosquittoOrSkip(ctx: { skip: (note?: string) => void }): void {
  if (mosquittoAvailable()) return;
  if (mosquittoRequired()) throw missingError();
  reportOnce(`skipping Mosquitto tests: ${missingMosquittoReason()}`);
  ctx.skip(missingMosquittoReason());
}

const aedesCase: BrokerCase = {
  name: 'aedes',
  features: { mqtt5: false, sharedSubscriptions: false },
  start: ({ port, persistent } = {}) => startAedes({ port, persistent }),
};

const mosquittoCase: BrokerCase = {
  name: 'mosquitto',
  features: { mqtt5: true, sharedSubscriptions: true },
  async start({ port, persistent } = {}) {
    if (!mosquittoAvailable()) throw missingError();
    return startMosquitto({ port, persistence: persistent });
  },
};

/**
 * The brokers a test should run against: aedes always; Mosquitto when the binary exists. When it does
 * not, Mosquitto is left out with a printed reason, except under APPRENTICE_REQUIRE_MOSQUITTO=1 (CI),
 * where it stays in the matrix and its `start()` fails.
 */
export function brokerMatrix(): BrokerCase[] {
  if (mosquittoAvailable() || mosquittoRequired()) return [aedesCase, mosquittoCase];
  reportOnce(`running against aedes only: ${missingMosquittoReason()}`);
  return [aedesCase];
}
