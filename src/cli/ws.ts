// `uffd ws`: working-set records as data (format: docs/working-sets.md).
import { parseArgs } from 'node:util';
import type { Command } from './command.js';
import { EXIT, UsageError } from './failure.js';
import { readWorkingSet, writeWorkingSet } from '../metrics/working-set.js';
import { diffWorkingSets, mergeWorkingSets, workingSetStats } from '../metrics/working-set-ops.js';

const USAGE = `usage: uffd ws stats RECORD... [--json]
       uffd ws diff A B [--json]
       uffd ws merge RECORD... --out FILE [--min-runs K | --intersection] [--json]

  Working-set records (written by \`uffd serve --record\`; format: docs/working-sets.md) as data.

  stats   pages, bytes, address span and timing (when 50/90/99% and the last page had faulted) of each
  diff    how two records compare: Jaccard index, pages in both, only in A, only in B
  merge   one record from several runs of the same snapshot: the pages in at least K runs (default 1, the
          union; --intersection: all of them), those most runs share first, then by median first-fault
          time; for --prefetch. FILE is written atomically and never replaces an existing file.

  Exit code 0 when done, 1 when a record cannot be read or is not valid (the message says why), 2 on a bad
  command line.
`;

export const wsCommand: Command = {
  summary: 'working-set records: stats, diff (Jaccard), merge several runs into one prefetch list',
  usage: USAGE,
  run: (args) => runWs(args),
};

const ms = (micros: number): string => `${(micros / 1000).toFixed(1)} ms`;
const mib = (bytes: number): string => `${(bytes / (1 << 20)).toFixed(1)} MiB`;

function runWs(args: string[], out: NodeJS.WritableStream = process.stdout): number {
  const [sub, ...rest] = args;
  const { values, positionals } = parseArgs({
    args: rest, allowPositionals: true, strict: true,
    options: { json: { type: 'boolean' }, out: { type: 'string' }, 'min-runs': { type: 'string' }, intersection: { type: 'boolean' } },
  });
  const json = values.json === true;
  switch (sub) {
    case 'stats': {
      if (positionals.length === 0) throw new UsageError('ws stats needs at least one record');
      const all = positionals.map((path) => ({ path, ...workingSetStats(readWorkingSet(path)) }));
      if (json) out.write(`${JSON.stringify(all.length === 1 ? all[0] : all, null, 2)}\n`);
      else {
        for (const s of all) {
          out.write(`${s.path}: ${String(s.pages)} pages of ${String(s.pageSize >> 10)} KiB (${mib(s.bytes)}) over a span of ${mib(s.spanBytes)}; `
            + `half by ${ms(s.p50Micros)}, 90% by ${ms(s.p90Micros)}, 99% by ${ms(s.p99Micros)}, the last page at ${ms(s.settleMicros)} (${s.ended})\n`);
        }
      }
      return EXIT.ok;
    }
    case 'diff': {
      const [a, b] = positionals;
      if (a === undefined || b === undefined || positionals.length !== 2) throw new UsageError('ws diff needs exactly two records');
      const d = diffWorkingSets(readWorkingSet(a), readWorkingSet(b), [a, b]);
      if (json) out.write(`${JSON.stringify(d, null, 2)}\n`);
      else {
        out.write(`Jaccard ${d.jaccard.toFixed(3)}: ${String(d.both)} pages in both, ${String(d.onlyA)} only in ${a}, ${String(d.onlyB)} only in ${b}`
          + `${d.sameSnapshot ? '' : ' (recorded from different snapshots)'}\n`);
      }
      return EXIT.ok;
    }
    case 'merge': {
      if (positionals.length === 0) throw new UsageError('ws merge needs at least one record');
      if (values.out === undefined) throw new UsageError('ws merge needs --out FILE');
      if (values.intersection === true && values['min-runs'] !== undefined) throw new UsageError('ws merge takes --min-runs or --intersection, not both');
      const minRuns = values.intersection === true ? positionals.length : Number(values['min-runs'] ?? '1');
      const merged = mergeWorkingSets(positionals.map((p) => readWorkingSet(p)), minRuns, positionals);
      writeWorkingSet(values.out, merged);
      if (json) out.write(`${JSON.stringify({ out: values.out, pages: merged.offsets.length, minRuns }, null, 2)}\n`);
      else out.write(`${values.out}: ${String(merged.offsets.length)} pages in at least ${String(minRuns)} of ${String(positionals.length)} runs\n`);
      return EXIT.ok;
    }
    default:
      throw new UsageError(`ws needs stats, diff or merge, got ${JSON.stringify(sub ?? '')}`);
  }
}
