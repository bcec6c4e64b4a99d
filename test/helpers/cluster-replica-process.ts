/**
 * A stand-in cloud replica for the cluster tests: runs a LeaderElector (default timings) and, while
 * leader, a fenced write every 100 ms into the test's `leader_writes` table. Prints one JSON line per
 * event on stdout: ready, leader {epoch}, follower {reason}, fenced {epoch, currentEpoch}.
 * Usage: node --import tsx test/helpers/cluster-replica-process.ts <registry-url> <name>
 */
import { sql } from 'drizzle-orm';
import { Fence, StaleLeaderError, openFence } from '../../cloud/cluster/fence.js';
import { LeaderElector } from '../../cloud/cluster/leader.js';
import { errorText } from '../../cloud/cluster/store.js';

const [url, name] = process.argv.slice(2);
if (!url || !name) {
  console.error('usage: cluster-replica-process.ts <registry-url> <name>');
  process.exit(2);
}

const say = (ev: string, extra: Record<string, unknown> = {}) => process.stdout.write(`${JSON.stringify({ ev, name, t: Date.now(), ...extra })}\n`);

const { fence, close } = openFence(url);
let ticker: NodeJS.Timeout | null = null;

function tick(f: Fence, epoch: number): void {
  f.write(epoch, 'test.tick', (tx) => tx.execute(sql`INSERT INTO leader_writes (epoch, holder) VALUES (${epoch}, ${name})`)).catch((err: unknown) => {
    if (err instanceof StaleLeaderError) say('fenced', { epoch, currentEpoch: err.currentEpoch });
    else say('write-error', { epoch, err: errorText(err) });
  });
}

const elector = new LeaderElector({
  connectionString: url,
  holder: name,
  onLeader: (epoch) => {
    say('leader', { epoch });
    ticker = setInterval(() => tick(fence, epoch), 100);
  },
  onFollower: (reason) => {
    if (ticker) clearInterval(ticker);
    ticker = null;
    say('follower', { reason });
  },
});

process.on('SIGTERM', () => {
  void elector
    .stop()
    .then(close)
    .finally(() => process.exit(0));
});

elector.start();
say('ready');
