#!/usr/bin/env node
// The `uffd` command.
import { parseArgs } from 'node:util';
import { probe } from '../probe/probe.js';
import { probeMadvise } from '../probe/madvise.js';
import { probeMemory } from '../probe/memory.js';
import { runDemo } from './demo.js';
import { runServe, SERVE_USAGE } from './serve.js';
import { probeReportJson, renderProbeText } from './render-probe.js';

const USAGE = `usage: uffd <command> [options]

commands:
  probe [--json] [--memory] [--madvise]
      what this kernel's userfaultfd offers: features with the kernel that added each, ioctls, access paths;
      --memory adds what registration allows per memory type (anon, shmem, hugetlb) and mode;
      --madvise adds which madvise advices the kernel knows and where they work.
      Exit code 0 when userfaultfd is usable here, 1 (with the reason) when not.
${SERVE_USAGE}  demo [--size MIB]
      writes a sample file, opens it as lazy memory (pages filled on first touch by a resolver thread),
      reads parts of it and shows which pages were paged in.
`;

function runProbe(args: string[]): number {
  const { values } = parseArgs({
    args,
    options: { json: { type: 'boolean' }, memory: { type: 'boolean' }, madvise: { type: 'boolean' }, help: { type: 'boolean', short: 'h' } },
    strict: true,
  });
  if (values.help === true) {
    process.stdout.write(USAGE);
    return 0;
  }
  const capabilities = probe();
  const report = {
    capabilities,
    ...(values.memory === true && capabilities.available ? { memory: probeMemory() } : {}),
    ...(values.madvise === true ? { madvise: probeMadvise() } : {}),
  };
  process.stdout.write(values.json === true ? `${JSON.stringify(probeReportJson(report), null, 2)}\n` : renderProbeText(report));
  if (!capabilities.available) {
    process.stderr.write(`uffd: userfaultfd is not usable here: ${capabilities.reason ?? 'unknown reason'}\n`);
    return 1;
  }
  return 0;
}

async function demo(args: string[]): Promise<number> {
  const { values } = parseArgs({ args, options: { size: { type: 'string' } }, strict: true });
  const sizeMiB = Number(values.size ?? '256');
  if (!Number.isSafeInteger(sizeMiB) || sizeMiB < 16 || sizeMiB > 65536) {
    process.stderr.write(`uffd demo: --size must be a whole number of MiB in [16, 65536], got ${values.size ?? ''}\n`);
    return 2;
  }
  return runDemo({ sizeMiB, out: process.stdout });
}

async function main(argv: string[]): Promise<number> {
  const [command, ...rest] = argv;
  try {
    switch (command) {
      case 'probe':
        return runProbe(rest);
      case 'demo':
        return await demo(rest);
      case 'serve':
        return await runServe(rest);
      case undefined:
      case 'help':
      case '--help':
      case '-h':
        process.stdout.write(USAGE);
        return command === undefined ? 2 : 0;
      default:
        process.stderr.write(`uffd: unknown command ${JSON.stringify(command)}\n${USAGE}`);
        return 2;
    }
  } catch (err) {
    // parseArgs errors (unknown option) carry a code; show them as usage errors.
    if (err instanceof TypeError && 'code' in err && String(err.code).startsWith('ERR_PARSE_ARGS')) {
      process.stderr.write(`uffd: ${err.message}\n${USAGE}`);
      return 2;
    }
    if (err instanceof RangeError) {
      process.stderr.write(`uffd: ${err.message}\n`);
      return 2;
    }
    throw err;
  }
}

process.exitCode = await main(process.argv.slice(2));
