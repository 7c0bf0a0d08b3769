// `uffd report RECORD... --out report.html`: pictures of restores in one self-contained HTML page.
import { writeFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { readWorkingSet } from '../metrics/working-set.js';
import { renderReport } from '../metrics/report-html.js';
import type { Command } from './command.js';
import { EXIT, UsageError } from './failure.js';

const USAGE = `usage: uffd report RECORD... --out FILE

  One self-contained HTML page (no network fetch) of working-set records (\`uffd serve --record\`): per
  record the address space as a heat map of first-fault time, pages faulted over time and the fault
  service histogram; for two records, their overlap.

  Exit code 0 when written, 1 when a record cannot be read or is not valid, 2 on a bad command line.
`;

export const reportCommand: Command = {
  summary: 'pictures of restores: one self-contained HTML page from working-set records',
  usage: USAGE,
  run: (args) => runReport(args),
};

function runReport(args: string[]): number {
  const { values, positionals } = parseArgs({ args, allowPositionals: true, strict: true, options: { out: { type: 'string' } } });
  if (positionals.length === 0 || values.out === undefined) throw new UsageError('report needs records and --out FILE');
  const html = renderReport(positionals.map((path) => ({ path, record: readWorkingSet(path) })));
  writeFileSync(values.out, html);
  process.stdout.write(`${values.out}: ${String(positionals.length)} record${positionals.length === 1 ? '' : 's'}, ${String(Math.ceil(html.length / 1024))} KiB\n`);
  return EXIT.ok;
}
