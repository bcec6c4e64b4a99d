/**
 * Which simulated devices misbehave, deterministically by device index, so a run is repeatable and
 * every worker split picks the same devices: device i is picked for share s when ⌊(i+φ+1)·s⌋ > ⌊(i+φ)·s⌋,
 * which spreads exactly ⌊n·s⌋ (±1) picks evenly over n devices. The phases differ so the shares
 * overlap as little as possible; a device picked for both never connects.
 */
export function pickedByShare(i: number, share: number, phase = 0): boolean {
  if (!(share > 0)) return false;
  if (share >= 1) return true;
  return Math.floor((i + phase + 1) * share + 1e-9) > Math.floor((i + phase) * share + 1e-9);
}

export interface SimShares {
  /** Share of devices that are provisioned but never connect at all. */
  neverConnect?: number;
  /**
   * Share of devices that come online once (reporting their status and capabilities, as a device that
   * was in use), then are switched off and never connect again.
   */
  switchedOff?: number;
  /** Share of devices whose model outputs are wrong, so the real self-test fails every install. */
  failSelfTest?: number;
  /**
   * Agent mode: share of devices on which every new agent version fails its health commit (never
   * healthy), so the real lifecycle rolls it back and the old version reports `agent_rolled_back`.
   */
  failAgentTrial?: number;
}

export interface SimPlanEntry {
  neverConnect: boolean;
  switchedOff: boolean;
  failSelfTest: boolean;
  failAgentTrial: boolean;
}

const phase = (s: number, at: number): number => (s > 0 && s < 1 ? Math.floor(at / s) : 0);

/** What device i does; a device picked for several shares takes the first of never-connect, switched-off, fail. */
export function planDevice(i: number, shares: SimShares): SimPlanEntry {
  const neverConnect = pickedByShare(i, shares.neverConnect ?? 0, 0);
  const o = shares.switchedOff ?? 0;
  const switchedOff = !neverConnect && pickedByShare(i, o, phase(o, 0.25));
  const f = shares.failSelfTest ?? 0;
  const failSelfTest = !neverConnect && !switchedOff && pickedByShare(i, f, phase(f, 0.5));
  const a = shares.failAgentTrial ?? 0;
  const failAgentTrial = !neverConnect && !switchedOff && pickedByShare(i, a, phase(a, 0.75));
  return { neverConnect, switchedOff, failSelfTest, failAgentTrial };
}

/** Indices of the devices of each share, for n devices. */
export function simPlan(n: number, shares: SimShares): { neverConnect: number[]; switchedOff: number[]; failSelfTest: number[]; failAgentTrial: number[] } {
  const out = { neverConnect: [] as number[], switchedOff: [] as number[], failSelfTest: [] as number[], failAgentTrial: [] as number[] };
  for (let i = 0; i < n; i++) {
    const p = planDevice(i, shares);
    if (p.neverConnect) out.neverConnect.push(i);
    if (p.switchedOff) out.switchedOff.push(i);
    if (p.failSelfTest) out.failSelfTest.push(i);
    if (p.failAgentTrial) out.failAgentTrial.push(i);
  }
  return out;
}

/** Parses a share flag: a number in [0, 1]. */
export function parseShare(name: string, value: string): number {
  const v = Number(value);
  if (value.trim() === '' || !Number.isFinite(v) || v < 0 || v > 1) throw new RangeError(`${name}: expected a share between 0 and 1, got "${value}"`);
  return v;
}
