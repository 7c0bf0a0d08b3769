// `uffd probe`: what this kernel's userfaultfd offers, as a table or one JSON document.
import { parseArgs } from 'node:util';
import { probe } from '../probe/probe.js';
import { probeMadvise } from '../probe/madvise.js';
import { probeMemory } from '../probe/memory.js';
import type { Command } from './command.js';
import { EXIT } from './failure.js';
import { probeReportJson, renderProbeText } from './render-probe.js';

export const probeCommand: Command = {
  summary: 'what this kernel\'s userfaultfd offers (features, ioctls, access paths, memory types, madvise)',
  usage: `usage: uffd probe [--json] [--memory] [--madvise]

  Prints every userfaultfd feature (offered or not, the kernel that added it, what it does), the ioctls,
  and whether a uffd can be created through the syscall, /dev/userfaultfd and user-mode-only, each with
  the reason and the remedy when not.

  --memory    adds what registration allows per memory type (anon, shmem, hugetlb) and mode
  --madvise   adds which madvise advices the kernel knows and where they work
  --json      the same content as one JSON document

  Exit code 0 when userfaultfd is usable here, 1 (with the reason on stderr) when not.
`,
  run(args) {
    const { values } = parseArgs({ args, options: { json: { type: 'boolean' }, memory: { type: 'boolean' }, madvise: { type: 'boolean' } }, strict: true });
    const capabilities = probe();
    const report = {
      capabilities,
      ...(values.memory === true && capabilities.available ? { memory: probeMemory() } : {}),
      ...(values.madvise === true ? { madvise: probeMadvise() } : {}),
    };
    process.stdout.write(values.json === true ? `${JSON.stringify(probeReportJson(report), null, 2)}\n` : renderProbeText(report));
    if (!capabilities.available) {
      process.stderr.write(`uffd probe: userfaultfd is not usable here: ${capabilities.reason ?? 'unknown reason'}\n`);
      return EXIT.failed;
    }
    return EXIT.ok;
  },
};
