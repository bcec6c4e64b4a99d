/**
 * engine-replica.ts as a process, for kill -9 drills: prints one JSON line per role change
 * ({ev: 'ready'|'leader'|'follower', name, t, epoch}) like cluster-replica-process.ts, so
 * cluster-replicas.ts can drive it. Default leader timings (what a real replica runs).
 * Usage: node --import tsx test/helpers/engine-replica-process.ts <registry-url> <name> <broker-url> <data-dir> <tick-seconds>
 */
import { openRegistry } from '../../cloud/registry/open.js';
import { startEngineReplica } from './engine-replica.js';

const [url, name, brokerUrl, dataDir, tick] = process.argv.slice(2);
if (!url || !name || !brokerUrl || !dataDir || !tick) {
  console.error('usage: engine-replica-process.ts <registry-url> <name> <broker-url> <data-dir> <tick-seconds>');
  process.exit(2);
}
const say = (ev: string, extra: Record<string, unknown> = {}) => process.stdout.write(`${JSON.stringify({ ev, name, t: Date.now(), ...extra })}\n`);

const registry = await openRegistry({ url });
const r = await startEngineReplica({ name, registry, url, brokerUrl, dataDir, tickSeconds: Number(tick) });
say('ready');
let last = '';
setInterval(() => {
  const s = r.replica.status();
  // 'leader' once the engine runs (it republished and evaluated), as /healthz would then report.
  const now = s.role === 'leader' && s.running.length ? `leader:${s.epoch}` : s.role === 'leader' ? '' : s.role;
  if (now && now !== last) {
    last = now;
    if (s.role === 'leader') say('leader', { epoch: s.epoch });
    else say(s.role);
  }
}, 50);
process.on('SIGTERM', () => {
  void r
    .stop()
    .then(() => registry.close())
    .finally(() => process.exit(0));
});
