import type { DemoSummary, DeviceGap, DeviceInfo, RoundRow } from './options.js';
import { pct } from './options.js';

/** The live table: a header and one row per round. */
export function roundTable(devices: DeviceInfo[], cohorts = false): { header: string[]; row: (r: RoundRow) => string } {
  const W = cohorts ? 38 : 27;
  const devCols = devices.map((d) => `${d.id}`.padEnd(W));
  const what = cohorts ? '#rel cohort / shared / teacher (gap)' : 'student / teacher (gap)';
  const header = [`round  release  ${devCols.join('  ')}  hard ex.  in set  to all devices`, `       ${' '.repeat(7)}  ${devices.map(() => what.padEnd(W)).join('  ')}`];
  const row = (r: RoundRow) => {
    const cells = devices.map((d) => {
      const x = r.devices.find((v) => v.id === d.id);
      if (!x) return r.state.padEnd(W);
      const shared = x.sharedAccuracy !== undefined ? ` / ${pct(x.sharedAccuracy)}%` : '';
      const rel = x.release !== undefined ? `#${x.release} ` : '';
      return `${rel}${pct(x.studentAccuracy)}%${shared} / ${pct(x.teacherAccuracy)}% (${pct(x.gap)})`.padEnd(W);
    });
    const rel = r.release === null ? r.state : `#${r.release}`;
    return `${String(r.round).padEnd(5)}  ${rel.padEnd(7)}  ${cells.join('  ')}  ${String(r.ingested).padStart(8)}  ${String(r.exampleCount ?? 0).padStart(6)}  ${r.rolloutSeconds === null ? '-' : r.rolloutSeconds.toFixed(1) + ' s'}`;
  };
  return { header, row };
}

/** Per device: the first row's gap, the last row's, and the share closed. */
export function gapsOf(devices: DeviceInfo[], rows: RoundRow[]): DemoSummary['gaps'] {
  const first = rows[0];
  const last = rows[rows.length - 1];
  if (!first || !last) return [];
  return devices.map((d) => {
    const f = first.devices.find((x) => x.id === d.id)!;
    const l = last.devices.find((x) => x.id === d.id)!;
    // In cohorts mode the round-0 gap is the shared (base) student's: what one student for everyone leaves.
    const g0 = f.teacherAccuracy - (f.sharedAccuracy ?? f.studentAccuracy);
    const gl = l.gap;
    const closed = (g: number) => (g0 > 0 ? (g0 - g) / g0 : NaN);
    const g: DeviceGap = { id: d.id, shift: d.shift, round0Gap: g0, lastRound: last.round, lastGap: gl, closed: closed(gl) };
    if (l.sharedAccuracy !== undefined) {
      const sg = l.teacherAccuracy - l.sharedAccuracy;
      Object.assign(g, { sharedLastGap: sg, sharedClosed: closed(sg), beatsShared: l.studentAccuracy > l.sharedAccuracy });
    }
    return g;
  });
}

/** The closing summary, as lines. */
export function summaryLines(s: DemoSummary): string[] {
  const lines = ['', `summary (${s.rows.length} rounds in ${s.seconds.toFixed(0)} s):`];
  for (const p of s.pools.perDevice) lines.push(`  ${p.id.padEnd(20)} ${s.pools.source}: traffic pool ${p.traffic} images, evaluation pool ${p.evaluation} (never sent to any device)`);
  for (const g of s.gaps) {
    const who = g.sharedClosed !== undefined ? 'cohort student ' : '';
    lines.push(`  ${g.id.padEnd(20)} ${s.rows[0]?.exampleCount ? `first gap (release #${s.rows[0].release})` : 'round-0 gap'} ${pct(g.round0Gap)} pts → round ${g.lastRound} ${who}gap ${pct(g.lastGap)} pts: ${Number.isFinite(g.closed) ? pct(g.closed) + '% of the gap closed' : 'no gap'}`);
    if (g.sharedClosed !== undefined) {
      lines.push(`  ${''.padEnd(20)} shared student gap ${pct(g.sharedLastGap!)} pts (${Number.isFinite(g.sharedClosed) ? pct(g.sharedClosed) + '% closed' : 'no gap'}); the cohort student ${g.beatsShared ? 'beats' : 'does not beat'} it on this device`);
    }
  }
  for (const e of s.examples) lines.push(`  ${e.id.padEnd(20)} hard examples selected ${e.selected ?? '?'}, stored by the cloud ${e.stored}`);
  return lines;
}
