// `uffd probe` output: pure functions of a probe report, so unknown future bits can be tested without a
// kernel that has them.
import { FEATURES } from '../abi.js';
import type { Capabilities } from '../probe/probe.js';
import type { MadviseProbe } from '../probe/madvise.js';
import type { MemoryProbes, ModeProbe } from '../probe/memory.js';
import { MEMORY_TYPES, REGISTER_MODES } from '../probe/memory.js';

export interface ProbeReport {
  capabilities: Capabilities;
  memory?: MemoryProbes;
  madvise?: MadviseProbe[];
}

const hex = (mask: bigint): string => `0x${mask.toString(16)}`;

function table(rows: string[][]): string[] {
  const widths: number[] = [];
  for (const row of rows) row.forEach((cell, i) => { widths[i] = Math.max(widths[i] ?? 0, cell.length); });
  return rows.map((row) => `  ${row.map((cell, i) => (i === row.length - 1 ? cell : cell.padEnd(widths[i] ?? 0))).join('  ')}`.trimEnd());
}

// `behavioural` is FEATURES' own word: the API, the text table and the JSON use the same one.
type FeatureRow = { bit: number; name: string; offered: boolean; since: string; behavioural: boolean | null; summary: string };

function featureRows(caps: Capabilities): FeatureRow[] {
  const rows: FeatureRow[] = FEATURES.map((f) => ({
    bit: f.bit, name: f.name, offered: caps.features.has(f.name), since: f.since,
    behavioural: f.behavioural, summary: f.summary,
  }));
  for (const bit of caps.features.unknownBits) {
    rows.push({ bit, name: `bit ${String(bit)}`, offered: true, since: '?', behavioural: null, summary: 'a feature this version of the library does not know' });
  }
  return rows;
}

function describeMode(probe: ModeProbe): string {
  if (!probe.ok) return probe.code;
  const failures = Object.entries(probe.failed).map(([name, code]) => `${name} reported but ${code}`);
  return `${probe.reported.toString()}${failures.length > 0 ? `  (${failures.join('; ')})` : ''}`;
}

function pageSize(bytes: number): string {
  return bytes >= 1 << 20 ? `${String(bytes >> 20)} MiB` : `${String(bytes >> 10)} KiB`;
}

export function renderProbeText(report: ProbeReport): string {
  const caps = report.capabilities;
  const out: string[] = [];
  out.push(caps.available
    ? `userfaultfd on Linux ${caps.kernel}: available (API ${hex(BigInt(caps.api))})`
    : `userfaultfd on Linux ${caps.kernel}: NOT available: ${caps.reason ?? 'unknown reason'}`);
  out.push('', 'Access');
  const access = [['syscall', caps.access.syscall], ['/dev/userfaultfd', caps.access.device], ['user-mode-only syscall', caps.access.userModeOnly]] as const;
  out.push(...table(access.map(([label, a]) => [label, a.ok ? 'ok' : `${a.code}: ${a.hint}`])));
  const rows = featureRows(caps);
  out.push('', `Features: ${String(rows.filter((r) => r.offered).length)} offered (mask ${hex(caps.features.mask)})`);
  out.push(...table([
    ['bit', 'name', 'offered', 'since', 'behavioural', 'what it does'],
    ...rows.map((r) => [String(r.bit), r.name, r.offered ? 'yes' : 'no', r.since, r.behavioural === null ? 'unknown' : r.behavioural ? 'yes' : 'no', r.summary]),
  ]));
  out.push('', `Ioctls on a new uffd (mask ${hex(caps.ioctls.mask)}): ${caps.ioctls.toString() || 'none'}`);
  if (report.memory !== undefined) {
    out.push('', 'Registration per memory type: the ioctls UFFDIO_REGISTER reports, and any that failed when tried');
    const memRows: string[][] = [['memory', 'page', 'mode', 'ioctls']];
    for (const type of MEMORY_TYPES) {
      const probe = report.memory[type];
      if (probe.skipped !== undefined) {
        memRows.push([type, probe.pageSize > 0 ? pageSize(probe.pageSize) : '-', '-', `skipped: ${probe.skipped}`]);
        continue;
      }
      for (const mode of REGISTER_MODES) memRows.push([type, pageSize(probe.pageSize), mode, describeMode(probe.modes[mode])]);
    }
    out.push(...table(memRows));
  }
  if (report.madvise !== undefined) {
    out.push('', 'madvise advices: known to this kernel (length-0 call), then tried on a scratch mapping');
    out.push(...table([
      ['advice', 'value', 'since', 'known', 'anon', 'shmem', 'hugetlb'],
      ...report.madvise.map((a) => [a.name, String(a.value), a.since, a.known ? 'yes' : 'no', a.memory.anon, a.memory.shmem, a.memory.hugetlb]),
    ]));
  }
  return `${out.join('\n')}\n`;
}

function modeJson(probe: ModeProbe): unknown {
  return probe.ok
    ? { ok: true, reported: probe.reported.toJSON(), reportedMask: hex(probe.reported.mask), works: probe.works.toJSON(), failed: probe.failed }
    : { ok: false, code: probe.code };
}

/** The same content as one JSON value (masks as hex strings: JSON has no 64-bit integers). */
export function probeReportJson(report: ProbeReport): unknown {
  const caps = report.capabilities;
  const json: Record<string, unknown> = {
    available: caps.available,
    ...(caps.reason === undefined ? {} : { reason: caps.reason }),
    kernel: caps.kernel,
    api: caps.api,
    access: caps.access,
    features: {
      mask: hex(caps.features.mask),
      offered: caps.features.toJSON(),
      table: featureRows(caps).map((r) => ({ bit: r.bit, name: r.name, offered: r.offered, since: r.since, behavioural: r.behavioural, summary: r.summary })),
    },
    ioctls: { mask: hex(caps.ioctls.mask), names: caps.ioctls.toJSON() },
  };
  if (report.memory !== undefined) {
    const memory: Record<string, unknown> = {};
    for (const type of MEMORY_TYPES) {
      const probe = report.memory[type];
      memory[type] = probe.skipped !== undefined
        ? { pageSize: probe.pageSize, skipped: probe.skipped }
        : { pageSize: probe.pageSize, modes: Object.fromEntries(REGISTER_MODES.map((m) => [m, modeJson(probe.modes[m])])) };
    }
    json.memory = memory;
  }
  if (report.madvise !== undefined) json.madvise = report.madvise;
  return json;
}
