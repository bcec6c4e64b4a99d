import net from 'node:net';
import { Aedes, type AedesOptions } from 'aedes';
import { silentLogger, type Logger } from '../../shared/log/index.js';

export interface EmbeddedBrokerOptions {
  /** Interface to listen on; default 127.0.0.1 (the zero-setup cloud only serves local devices unless told otherwise). */
  host?: string;
  /** TCP port; default 1883. 0 picks a free port (tests): read it back from `port` after `start()`. */
  port?: number;
  /**
   * Passed to `Aedes.createBroker()` (authenticate, authorizePublish, ...). Persistence is left at the
   * aedes default (in memory): retained desired states and chunks live as long as the process, and
   * the cloud republishes them on start (STYLE.md 4: do not rely on the broker keeping retained state).
   */
  aedes?: AedesOptions;
  log?: Logger;
}

/**
 * The embedded MQTT broker behind the cloud's zero-setup default: aedes 1.2 in-process on a TCP
 * listener. aedes speaks MQTT 3.1.1 only and has no shared subscriptions (DESIGN.md "MQTT"), so
 * clients talking to it must not use `$share` or MQTT 5.
 *
 * @example
 * const broker = await EmbeddedBroker.create({ port: 0 });
 * const mqtt = await CloudMqtt.create({ url: broker.url, sharedSubscriptions: false });
 * // ...
 * await broker.stop();
 */
export class EmbeddedBroker {
  private aedes: Aedes | undefined;
  private server: net.Server | undefined;
  private readonly sockets = new Set<net.Socket>();
  private boundPort: number | undefined;
  private readonly host: string;
  private readonly requestedPort: number;
  private readonly log: Logger;

  constructor(private readonly opts: EmbeddedBrokerOptions = {}) {
    this.host = opts.host ?? '127.0.0.1';
    this.requestedPort = opts.port ?? 1883;
    this.log = opts.log ?? silentLogger;
  }

  /** Creates and starts a broker. */
  static async create(opts: EmbeddedBrokerOptions = {}): Promise<EmbeddedBroker> {
    const b = new EmbeddedBroker(opts);
    await b.start();
    return b;
  }

  /** The port actually listened on (the real one when 0 was asked for). Throws before `start()`. */
  get port(): number {
    if (this.boundPort === undefined) throw new Error('EmbeddedBroker: not started');
    return this.boundPort;
  }

  /** `mqtt://host:port` for clients of this broker. */
  get url(): string {
    const host = this.host === '0.0.0.0' || this.host === '::' ? '127.0.0.1' : this.host;
    return `mqtt://${host.includes(':') ? `[${host}]` : host}:${this.port}`;
  }

  /** The aedes instance (for hooks and stats); undefined before `start()`. */
  get instance(): Aedes | undefined {
    return this.aedes;
  }

  async start(): Promise<void> {
    if (this.server) return;
    // aedes 1.2: the constructor no longer starts the broker; createBroker() does (its default export is gone).
    // The limits of deploy/mosquitto/mosquitto.conf where aedes has one: max_keepalive 300. aedes has no
    // max_queued_messages/bytes or max_inflight for outgoing QoS 1 (its memory persistence queues without
    // bound); what bounds it is the edge outbox's 4 unreceipted batches per device (issue 9).
    const aedes = await Aedes.createBroker({ keepaliveLimit: 300, ...this.opts.aedes });
    aedes.on('clientError', (client, err) => this.log.debug({ client: client?.id, err: err.message }, 'broker/client-error'));
    aedes.on('connectionError', (client, err) => this.log.debug({ client: client?.id, err: err.message }, 'broker/connection-error'));
    const server = net.createServer((sock) => {
      this.sockets.add(sock);
      sock.once('close', () => this.sockets.delete(sock));
      // A socket error must never reach the process as an unhandled 'error' event.
      sock.on('error', (err) => this.log.debug({ err: err.message }, 'broker/socket-error'));
      aedes.handle(sock);
    });
    try {
      await new Promise<void>((resolve, reject) => {
        server.once('error', reject);
        server.listen({ port: this.requestedPort, host: this.host }, () => {
          server.off('error', reject);
          resolve();
        });
      });
    } catch (err) {
      await new Promise<void>((r) => aedes.close(() => r()));
      throw err;
    }
    server.on('error', (err) => this.log.error({ err }, 'broker/server-error'));
    const addr = server.address();
    this.boundPort = addr !== null && typeof addr === 'object' ? addr.port : this.requestedPort;
    this.aedes = aedes;
    this.server = server;
    this.log.info({ host: this.host, port: this.boundPort }, 'broker/listening');
  }

  /**
   * Closes every live connection of a device (its username, whatever its client id), e.g. when it is
   * revoked: authentication then refuses its reconnect. The broker publishes its last will. Returns
   * how many connections were closed.
   */
  disconnectDevice(deviceId: string): number {
    const aedes = this.aedes;
    if (!aedes) return 0;
    // aedes keeps connected clients by client id; the type definitions do not expose the map.
    const clients = Object.values((aedes as unknown as { clients: Record<string, { closed: boolean; close(): void } & Record<string, unknown>> }).clients);
    let closed = 0;
    for (const c of clients) {
      if (c.apprenticeDevice !== deviceId || c.closed) continue;
      c.close();
      closed++;
    }
    if (closed) this.log.info({ deviceId, connections: closed }, 'broker/device-disconnected');
    return closed;
  }

  /** Closes the listener, drops every connection and closes aedes. Idempotent. */
  async stop(): Promise<void> {
    const server = this.server;
    const aedes = this.aedes;
    this.server = undefined;
    this.aedes = undefined;
    if (server) {
      const closed = new Promise<void>((r) => server.close(() => r()));
      // server.close() waits for open connections: end them, clients reconnect elsewhere or later.
      for (const s of this.sockets) s.destroy();
      this.sockets.clear();
      await closed;
    }
    if (aedes) await new Promise<void>((r) => aedes.close(() => r()));
    if (server) this.log.info({ port: this.boundPort }, 'broker/stopped');
  }
}
