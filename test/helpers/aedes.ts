/**
 * In-process aedes broker for tests (aedes 1.2: `Aedes.createBroker()`; the default export is gone).
 * Use through `test/helpers/broker.ts`.
 */
import net from 'node:net';
import { Aedes, type AedesOptions } from 'aedes';
import type { TestBroker } from './broker.js';
import { freePort } from './net.js';

export interface StartAedesOptions {
  /** TCP port on 127.0.0.1; a free one by default. */
  port?: number;
  /** Passed to `Aedes.createBroker()` (authenticate, authorizePublish, ...); reused on restart. */
  options?: AedesOptions;
  /**
   * When true, `restart()` keeps the same Aedes instance, so retained messages and persistent
   * sessions survive (like Mosquitto with `persistence true`). Default false: a restart starts
   * from an empty broker, like a Mosquitto without persistence.
   */
  persistent?: boolean;
}

export interface AedesBroker extends TestBroker {
  readonly kind: 'aedes';
  /** The current broker instance (a new one after a non-persistent restart). */
  readonly broker: Aedes;
}

function closeAedes(broker: Aedes): Promise<void> {
  return new Promise((resolve) => broker.close(() => resolve()));
}

/**
 * Starts an aedes broker on 127.0.0.1 (MQTT 3.1.1 only, no shared subscriptions).
 * `restart()` drops every connection abruptly (like a broker crash) and listens on the same port again.
 *
 * @example
 * const b = await startAedes();
 * const client = mqtt.connect(b.url);
 * // ...
 * await b.stop();
 */
export async function startAedes({ port, options, persistent = false }: StartAedesOptions = {}): Promise<AedesBroker> {
  const boundPort = port ?? (await freePort());
  let broker = await Aedes.createBroker(options);
  let server: net.Server | undefined;
  const sockets = new Set<net.Socket>();
  let stopped = false;

  const listen = async (): Promise<void> => {
    const srv = net.createServer((sock) => {
      sockets.add(sock);
      sock.once('close', () => sockets.delete(sock));
      broker.handle(sock);
    });
    await new Promise<void>((resolve, reject) => {
      srv.once('error', reject);
      srv.listen({ port: boundPort, host: '127.0.0.1' }, () => {
        srv.off('error', reject);
        resolve();
      });
    });
    server = srv;
  };

  const unlisten = async (): Promise<void> => {
    const srv = server;
    server = undefined;
    if (!srv) return;
    const closed = new Promise<void>((resolve) => srv.close(() => resolve()));
    // server.close() waits for open connections; destroy them so clients see the broker go away.
    for (const s of sockets) s.destroy();
    sockets.clear();
    await closed;
  };

  await listen();

  return {
    kind: 'aedes',
    url: `mqtt://127.0.0.1:${boundPort}`,
    port: boundPort,
    get broker() {
      return broker;
    },
    async restart() {
      if (stopped) throw new Error('startAedes: restart() after stop()');
      await unlisten();
      if (!persistent) {
        await closeAedes(broker);
        broker = await Aedes.createBroker(options);
      }
      await listen();
    },
    async stop() {
      if (stopped) return;
      stopped = true;
      await unlisten();
      await closeAedes(broker);
    },
  };
}
