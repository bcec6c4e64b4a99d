import type { CloudClient } from './cloud-client.js';
import { linesOf, listRounds, waitRound, waitServing, type RoundView, type WaitDeps } from './cloud-client.js';
import { accuracyOf, predictOnDevice, ServedArtifacts } from './measure.js';
import { DEMO_INPUT_SIZE, DEMO_MODEL, sleep, type DemoOptions, type DeviceInfo, type DeviceRound, type RoundRow } from './options.js';
import type { LabelledImages, TrafficStream } from './pools.js';
import { roundTable } from './report.js';

/** Per-device state the rounds need: its traffic stream, its fixed evaluation set and the teacher's accuracy on it. */
export interface DeviceData {
  stream: TrafficStream;
  evaluation: LabelledImages;
  teacherAccuracy: number;
}

/** Selected counts from the devices' telemetry (outbox counters). */
export async function selectedCounts(api: CloudClient, devices: DeviceInfo[]): Promise<Map<string, number | null>> {
  const m = new Map<string, number | null>();
  for (const d of devices) {
    const v = await api.get<{ telemetry: { outbox?: { selected: number } } | null }>(`/v1/devices/${d.id}`);
    m.set(d.id, v.telemetry?.outbox ? v.telemetry.outbox.selected : null);
  }
  return m;
}

export interface RoundsDeps {
  o: DemoOptions;
  api: CloudClient;
  devices: DeviceInfo[];
  data: Map<string, DeviceData>;
  rows: RoundRow[];
  /** Examples of this device in the cloud's registry (either dialect). */
  storedBy: (id: string) => Promise<number>;
  wait: WaitDeps;
  logHint: string;
}

/** Round 0 (manual, unless an earlier run released one), then one row per scheduled round until `o.rounds`. */
export async function runRounds(deps: RoundsDeps): Promise<void> {
  const { o, api, devices, data, rows, storedBy, wait } = deps;
  const artifacts = new ServedArtifacts(api);
  const storedOf = async () => new Map(await Promise.all(devices.map(async (d) => [d.id, await storedBy(d.id)] as const)));
  const storedTotal = async () => [...(await storedOf()).values()].reduce((a, n) => a + n, 0);

  /**
   * Waits until every device's selected count (its last telemetry) equals what the cloud stored (the outboxes
   * are drained and the telemetry caught up). Past the timeout it says so and goes on: the summary then
   * shows both counts.
   */
  const waitFlushed = async (timeoutMs = 60_000) => {
    const deadline = Date.now() + timeoutMs;
    let sel = new Map<string, number | null>();
    let stored = new Map<string, number>();
    while (Date.now() < deadline) {
      wait.check();
      sel = await selectedCounts(api, devices);
      stored = await storedOf();
      if (devices.every((d) => sel.get(d.id) === stored.get(d.id))) return;
      await sleep(300);
    }
    wait.status(`outboxes not drained after ${timeoutMs / 1000} s: ${devices.map((d) => `${d.id} selected ${sel.get(d.id) ?? '?'}, stored ${stored.get(d.id) ?? '?'}`).join('; ')}`);
  };
  /** One traffic phase on the serving release(s); returns, per device, the traffic answered by its release and the device's own accuracy on it. */
  const traffic = async (want: number | readonly number[]) =>
    Promise.all(
      devices.map(async (d, di) => {
        const release = typeof want === 'number' ? want : want[di]!;
        const { features, labels } = data.get(d.id)!.stream.take(o.traffic);
        const { pred, releases } = await predictOnDevice(d.apiUrl, features, DEMO_INPUT_SIZE);
        let n = 0;
        let right = 0;
        for (let i = 0; i < labels.length; i++) {
          if (releases[i] !== release) continue;
          n++;
          if (pred[i] === labels[i]) right++;
        }
        return { n, accuracy: n ? right / n : NaN };
      }),
    );

  let prior = await listRounds(api, DEMO_MODEL);
  let current: RoundView;
  const released = prior.find((r) => r.state === 'released');
  if (!released) {
    const inFlight = prior.find((r) => r.state === 'queued' || r.state === 'running');
    const id = inFlight?.id ?? (await api.send<{ id: string }>('POST', `/v1/models/${DEMO_MODEL}/rounds`, {})).body.id;
    wait.status(`round 0: distilling ${o.student} from the teacher on ${o.baseLimit} clean MNIST training images`);
    current = await waitRound(wait, id, 'round 0');
    if (current.state !== 'released') throw new Error(`round 0 ${current.state}: ${current.error}`);
  } else {
    current = released;
    wait.status(`continuing from release #${current.releaseSeq} of an earlier run (use --fresh to start over)`);
  }

  const cohorts = o.cohorts === true;
  const { header, row } = roundTable(devices, cohorts);
  /** Cohorts: what each device served after the last measured round. */
  const served = new Map<string, number>();
  for (const line of header) o.out(line);
  let roundNo = 0;
  let stored0 = await storedTotal();
  for (;;) {
    wait.check();
    const rel = current.releaseSeq!;
    const startedMs = Date.parse(current.startedAt ?? current.createdAt);
    wait.status(`round ${roundNo}: release #${rel} rolling out (canary first)`);
    // Cohorts: each device waits for its own cohort's release of this round; the base release is measured beside it.
    const lines = cohorts ? linesOf(current, devices, true, served) : rel;
    const { at, serving } = await waitServing(wait, devices, lines, deps.logHint);
    wait.status(`round ${roundNo}: release${cohorts ? `s ${JSON.stringify(lines)}` : ` #${rel}`} on every device; sending ${o.traffic} shifted traffic images to each, measuring on the evaluation pools`);
    const sent = await traffic(cohorts ? serving.map((s) => s.release) : rel);
    const shared = cohorts ? await artifacts.bytesOf(rel) : undefined;
    const measured: DeviceRound[] = [];
    for (const [i, d] of devices.entries()) {
      const dd = data.get(d.id)!;
      const student = await accuracyOf(await artifacts.get(serving[i]!), dd.evaluation);
      const cohortCols = shared ? { release: serving[i]!.release, sharedAccuracy: await accuracyOf(shared, dd.evaluation) } : {};
      if (cohorts) served.set(d.id, serving[i]!.release);
      measured.push({ id: d.id, shift: d.shift, examples: sent[i]!.n, evaluated: dd.evaluation.labels.length, studentAccuracy: student, teacherAccuracy: dd.teacherAccuracy, gap: dd.teacherAccuracy - student, trafficStudentAccuracy: sent[i]!.accuracy, ...cohortCols });
    }
    await waitFlushed();
    const storedNow = await storedTotal();
    const r: RoundRow = {
      round: roundNo,
      roundId: current.id,
      state: current.state,
      release: rel,
      exampleCount: current.exampleCount,
      ingested: storedNow - stored0,
      rolloutSeconds: (at - startedMs) / 1000,
      roundSeconds: current.finishedAt && current.startedAt ? (Date.parse(current.finishedAt) - Date.parse(current.startedAt)) / 1000 : null,
      devices: measured,
    };
    stored0 = storedNow;
    rows.push(r);
    o.out(row(r));
    if (o.rounds !== undefined && roundNo >= o.rounds) return;
    // The scheduler starts the next round from the hard examples; wait for a release. A rejected round
    // or too few examples: more traffic on the serving release, then wait again.
    let next: RoundView | undefined;
    prior = await listRounds(api, DEMO_MODEL);
    const seen = new Set(prior.filter((x) => x.createdAt <= current.createdAt).map((x) => x.id));
    let idleSince = Date.now();
    while (!next) {
      wait.check();
      const fresh = (await listRounds(api, DEMO_MODEL)).filter((x) => !seen.has(x.id)).sort((a, b) => a.createdAt.localeCompare(b.createdAt));
      const cand = fresh[0];
      if (cand) {
        const done = await waitRound(wait, cand.id, `round ${roundNo + 1}`);
        seen.add(cand.id);
        if (done.state === 'released') {
          next = done;
          break;
        }
        o.out(`${String(roundNo + 1).padEnd(5)}  ${done.state.padEnd(7)}  ${done.error ?? ''}`);
        idleSince = 0;
      }
      if (Date.now() - idleSince > 15_000) {
        wait.status(`round ${roundNo + 1}: not started yet; more traffic on release${cohorts ? 's' : ''} #${cohorts ? [...served.values()].join(', #') : rel}`);
        await traffic(cohorts ? devices.map((d) => served.get(d.id) ?? rel) : rel);
        idleSince = Date.now();
      }
      await sleep(500);
    }
    current = next;
    roundNo++;
  }
}
