/**
 * The 60 s overflow drill (issue 9, "Proof by fault"): 100 devices keep sending 20,000 examples in all
 * while the cloud is stopped for 60 s, on a real Mosquitto with persistence. Each device is the real
 * edge outbox (SQLite, synchronous=FULL) and OutboxPublisher (receipts, 4 batches in flight, shipped
 * adaptive receipt wait and jitter) on its own MQTT connection with its provisioned credentials; the cloud is the real
 * one (in process). Pass: the set of stored example ids equals the set the devices selected, with 0
 * evictions, 0 drops and 0 refusals.
 *
 *   npm run drill:overflow                 # the shipped limits of deploy/mosquitto/mosquitto.conf
 *   npm run drill:overflow -- --small-queue   # max_queued_messages 500, far below the message count
 *
 * Writes test/bench/results/drill-overflow-{shipped,small-queue}.json and prints a one-line summary.
 * Too long for CI (a few minutes); run by hand.
 */
import { readFileSync } from 'node:fs';
import { loadavg } from 'node:os';
import { join } from 'node:path';
import mqtt from 'mqtt';
import { Outbox, OutboxPublisher, buildExample } from '../../edge/outbox/index.js';
import { CLOUD_FEATURES, DEVICE_CAPABILITIES, PROTOCOL_REVISION, PROTOCOL_VERSION, encodePayload, statusSchema, topics, type Status } from '../../shared/protocol/index.js';
import { FaultWorld, MODEL } from '../e2e/fault-harness.js';
import { writeBenchResult } from './common.js';

const DEVICES = Number(process.env.DRILL_DEVICES ?? 100);
const EXAMPLES = Number(process.env.DRILL_EXAMPLES ?? 20_000);
const SEND_SECONDS = Number(process.env.DRILL_SEND_SECONDS ?? 90);
const DOWN_AT_S = Number(process.env.DRILL_DOWN_AT ?? 15);
const DOWN_FOR_S = Number(process.env.DRILL_DOWN_SECONDS ?? 60);
const small = process.argv.includes('--small-queue');
const SMALL_QUEUE = 500;
const PROBS = Float32Array.from({ length: 10 }, () => 0.1);

function shippedLimits(): string[] {
  const conf = readFileSync(join(process.cwd(), 'deploy/mosquitto/mosquitto.conf'), 'utf8');
  const lines = conf.split('\n').filter((l) => /^(max_queued_messages|max_queued_bytes|max_inflight_messages|max_packet_size|autosave_interval|autosave_on_changes)\s/.test(l));
  // The harness's broker saves after every change unless told otherwise: use the shipped save policy.
  return lines.some((l) => l.startsWith('autosave_on_changes')) ? lines : [...lines, 'autosave_on_changes false'];
}

interface Device {
  id: string;
  outbox: Outbox;
  publisher: OutboxPublisher;
  client: mqtt.MqttClient;
  selected: string[];
}

async function main(): Promise<void> {
  const limits = small ? [`max_queued_messages ${SMALL_QUEUE}`, ...shippedLimits().filter((l) => !l.startsWith('max_queued_messages'))] : shippedLimits();
  const w = await FaultWorld.create({ brokerConfig: limits });
  const t0 = Date.now();
  const log = (msg: string) => process.stderr.write(`[drill ${((Date.now() - t0) / 1000).toFixed(1)} s] ${msg}\n`);
  const devices: Device[] = [];
  let receiptsReceived = 0;
  const receiptDelays: number[] = [];
  const pct = (q: number) => {
    const s = [...receiptDelays].sort((a, b) => a - b);
    return s.length ? s[Math.min(s.length - 1, Math.floor(q * s.length))]! : 0;
  };
  try {
    w.addRelease({ seed: 1 }); // registers the model the examples name
    for (let i = 0; i < DEVICES; i++) {
      const id = `drill-${String(i).padStart(3, '0')}`;
      const cfg = await w.provision(id);
      const outbox = await Outbox.create({ path: join(cfg.dataDir, 'outbox.db'), maxRows: 10_000, maxBytes: 64 * 1024 * 1024 });
      const client = mqtt.connect(cfg.mqtt.url, { clientId: id, username: cfg.mqtt.username, password: cfg.mqtt.password, clean: true, reconnectPeriod: 1_000, keepalive: 30 });
      // The shipped outbox defaults (receipt wait from 60 s, adaptive; 4 in flight; connect jitter 5 s), batches of 64.
      const publisher = new OutboxPublisher({ outbox, client, deviceId: id, receipts: () => true, connectJitterMs: 5_000, maxBatchExamples: 64 });
      const receipts = topics.receipts(id);
      // Its retained status declares the receipts capability: the cloud sends receipts only to such devices.
      const status = { v: PROTOCOL_VERSION, deviceId: id, state: 'online', model: MODEL, release: 1, sha256: null, at: new Date().toISOString(), protocolVersion: PROTOCOL_REVISION, capabilities: [DEVICE_CAPABILITIES.receipts] };
      client.on('connect', () => {
        client.subscribe(receipts, { qos: 1 });
        client.publish(topics.status(id), encodePayload(statusSchema, status as Status), { qos: 1, retain: true });
      });
      client.on('message', (topic, payload) => {
        if (topic !== receipts) return;
        receiptsReceived++;
        // Commit → device: the receipt's `at` is stamped after the commit (same clock: one process).
        const at = Date.parse((JSON.parse(payload.toString('utf8')) as { at?: string }).at ?? '');
        if (Number.isFinite(at)) receiptDelays.push(Date.now() - at);
        publisher.handleReceipt(payload);
      });
      client.on('error', () => undefined);
      publisher.start();
      devices.push({ id, outbox, publisher, client, selected: [] });
    }
    log(`${DEVICES} devices connected; broker limits: ${limits.join('; ')}; cloud accepts receipts: ${CLOUD_FEATURES.receipts}`);

    // Every device adds its share at a steady rate over SEND_SECONDS; the cloud goes down at DOWN_AT_S for DOWN_FOR_S.
    const perDevice = Math.ceil(EXAMPLES / DEVICES);
    const ticks = SEND_SECONDS;
    let added = 0;
    let cloudDownAt = 0;
    let cloudUpAt = 0;
    const input = new Float32Array(784);
    for (let tick = 0; tick < ticks; tick++) {
      const tickStart = Date.now();
      if (tick === DOWN_AT_S) {
        await w.stopCloud();
        cloudDownAt = Date.now();
        log('cloud stopped');
      }
      if (tick === DOWN_AT_S + DOWN_FOR_S) {
        await w.startCloud();
        cloudUpAt = Date.now();
        log(`cloud restarted after ${((cloudUpAt - cloudDownAt) / 1000).toFixed(1)} s down`);
      }
      for (const d of devices) {
        const want = Math.min(perDevice, Math.round(((tick + 1) * perDevice) / ticks)) - d.selected.length;
        const batch = [];
        for (let k = 0; k < want && added < EXAMPLES; k++, added++) {
          input[0] = added;
          batch.push(buildExample({ input, probs: PROBS, reason: 'low_confidence', model: MODEL, release: 1 }));
        }
        if (batch.length === 0) continue;
        d.outbox.addBatch(batch);
        d.selected.push(...batch.map((e) => e.id));
      }
      if (tick % 10 === 0) log(`added ${added}; outbox depth ${devices.reduce((a, d) => a + d.outbox.depth(), 0)}; stored ${w.cloud ? w.storedIds().length : '(cloud down)'}`);
      await new Promise((r) => setTimeout(r, Math.max(0, 1000 - (Date.now() - tickStart))));
    }
    if (!cloudUpAt) {
      await w.startCloud();
      cloudUpAt = Date.now();
    }
    log(`all ${added} added; waiting for the outboxes to drain`);
    const deadline = Date.now() + 15 * 60_000;
    for (;;) {
      const depth = devices.reduce((a, d) => a + d.outbox.depth(), 0);
      const stored = w.storedIds().length;
      if (depth === 0 && stored >= added) break;
      if (Date.now() > deadline) {
        log(`not drained after 15 min: depth ${depth}, stored ${stored} of ${added}`);
        break;
      }
      if (Math.floor((Date.now() - t0) / 1000) % 10 === 0) {
        const p = devices.map((d) => d.publisher.stats());
        log(`draining: depth ${depth}, stored ${stored}/${added}, in flight ${p.reduce((a, s) => a + s.inFlight, 0)}, receipts received ${receiptsReceived} (commit→device p50 ${pct(0.5)} ms, max ${pct(1)} ms), publisher failures ${p.reduce((a, s) => a + s.failures, 0)}, bad receipts ${p.reduce((a, s) => a + s.badReceipts, 0)}, ingest ${JSON.stringify(w.cloud!.ingest.stats())}`);
      }
      await new Promise((r) => setTimeout(r, 1_000));
    }
    const drainedAt = Date.now();
    const drained = devices.every((d) => d.outbox.depth() === 0);
    const selected = new Set(devices.flatMap((d) => d.selected));
    const storedIds = w.storedIds();
    const stored = new Set(storedIds);
    const missing = [...selected].filter((id) => !stored.has(id)).length;
    const extra = [...stored].filter((id) => !selected.has(id)).length;
    const counters = devices.map((d) => d.outbox.stats());
    const sum = (k: 'evicted' | 'dropped' | 'refused' | 'published') => counters.reduce((a, c) => a + c[k], 0);
    const failures = devices.reduce((a, d) => a + d.publisher.stats().failures, 0);
    const ingest = w.cloud!.ingest.stats();
    const pass = drained && missing === 0 && extra === 0 && storedIds.length === selected.size && sum('evicted') === 0 && sum('dropped') === 0 && sum('refused') === 0 && sum('published') === storedIds.length;
    const name = `drill-overflow-${small ? 'small-queue' : 'shipped'}`;
    const file = writeBenchResult(name, {
      // The drill loads the machine itself; above 2 (the core count) means other work competed too.
      loadedMachine: (loadavg()[0] ?? 0) > 2,
      loadAverage1m: loadavg()[0],
      pass,
      drained,
      devices: DEVICES,
      outboxDepthAtEnd: devices.reduce((a, d) => a + d.outbox.depth(), 0),
      examplesSelected: selected.size,
      examplesStored: storedIds.length,
      missing,
      extra,
      evicted: sum('evicted'),
      dropped: sum('dropped'),
      refused: sum('refused'),
      published: sum('published'),
      publisherFailures: failures,
      /** Rows the devices deleted on a `stored` receipt: must equal examplesStored. */
      acknowledgedByDevices: sum('published'),
      receiptsReceived,
      /** From the receipt's creation (after its commit) to its arrival at the device, in ms. */
      receiptDeliveryMs: { p50: pct(0.5), p99: pct(0.99), max: pct(1) },
      /** Batches whose receipt wait ran out (rows sent again), and the largest observed receipt latency. */
      receiptTimeouts: devices.reduce((a, d) => a + d.publisher.stats().receiptTimeouts, 0),
      maxReceiptLatencyMs: Math.max(...devices.map((d) => d.publisher.stats().receiptLatencyMs)),
      ingest: { inserted: ingest.examplesInserted, duplicates: ingest.duplicates, duplicatesSkipped: ingest.duplicatesSkipped, batches: ingest.batches, transactions: ingest.flushes, failedCommits: ingest.failedCommits, dropped: ingest.dropped },
      brokerLimits: limits,
      cloudDownSeconds: cloudDownAt ? (cloudUpAt - cloudDownAt) / 1000 : 0,
      sendSeconds: SEND_SECONDS,
      /** Until every outbox was empty, or the 15 min limit when `drained` is false. */
      drainSecondsAfterRestart: (drainedAt - cloudUpAt) / 1000,
    });
    process.stdout.write(
      `${pass ? 'PASS' : 'FAIL'} ${name}: ${selected.size} selected, ${storedIds.length} stored (missing ${missing}, extra ${extra}), ${sum('published')} acknowledged by devices, ${ingest.duplicates} duplicates, evicted ${sum('evicted')}, dropped ${sum('dropped')}, refused ${sum('refused')}; cloud down ${cloudDownAt ? ((cloudUpAt - cloudDownAt) / 1000).toFixed(0) : 0} s, drained ${((drainedAt - cloudUpAt) / 1000).toFixed(0)} s after restart → ${file}\n`,
    );
    process.exitCode = pass ? 0 : 1;
  } finally {
    for (const d of devices) {
      await d.publisher.stop();
      await d.client.endAsync(true).catch(() => undefined);
      d.outbox.dispose();
    }
    await w.dispose();
  }
}

await main();
