#!/usr/bin/env node
// The `uffd` command: dispatches to a subcommand and handles, once for all of them, `--help`, `--version`,
// `--debug`, failures (one line with the remedy, or one JSON object with --json) and exit codes.
import type { Command, CommandContext } from './command.js';
import { demoCommand } from './demo.js';
import { EXIT, reportFailure, UsageError } from './failure.js';
import { packCommand } from './pack.js';
import { probeCommand } from './probe.js';
import { serveCommand } from './serve.js';
import { criuLazyPagesCommand } from './criu-lazy-pages.js';
import { wsCommand } from './ws.js';
import { reportCommand } from './report.js';
import { renderVersion, versionReport } from './version.js';

const COMMANDS: Record<string, Command> = {
  probe: probeCommand,
  serve: serveCommand,
  'criu-lazy-pages': criuLazyPagesCommand,
  demo: demoCommand,
  pack: packCommand,
  ws: wsCommand,
  report: reportCommand,
};

const usage = (): string => `usage: uffd <command> [options]
       uffd <command> --help | uffd --version [--json]

commands:
${Object.entries(COMMANDS).map(([name, c]) => `  ${name.padEnd(10)} ${c.summary}`).join('\n')}

options for every command:
  --help, -h   what the command does and its options
  --json       results (and a failure, on stderr) as JSON
  --debug      print the stack trace of a failure (also UFFD_DEBUG=1)

exit codes:
  ${String(EXIT.ok)}   done
  ${String(EXIT.failed)}   operational failure: the message says what failed and what to do
  ${String(EXIT.usage)}   usage error: unknown command or option, bad option value
  ${String(EXIT.internal)}  a bug in uffd: re-run with --debug and report the stack trace
`;

async function main(argv: string[]): Promise<number> {
  const debug = argv.includes('--debug') || process.env.UFFD_DEBUG === '1';
  const args = argv.filter((a) => a !== '--debug');
  const json = args.includes('--json');
  const [name, ...rest] = args;
  if (name === '--version' || name === '-v' || name === 'version') {
    const report = versionReport();
    process.stdout.write(json ? `${JSON.stringify(report)}\n` : renderVersion(report));
    return EXIT.ok;
  }
  if (name === undefined || name === 'help' || name === '--help' || name === '-h') {
    const topic = name === 'help' ? rest[0] : undefined;
    const command = topic === undefined ? undefined : COMMANDS[topic];
    (name === undefined ? process.stderr : process.stdout).write(command?.usage ?? usage());
    return name === undefined ? EXIT.usage : EXIT.ok;
  }
  const command = Object.hasOwn(COMMANDS, name) ? COMMANDS[name] : undefined;
  const label = command === undefined ? 'uffd' : `uffd ${name}`;
  const context: CommandContext = { origins: new Map() };
  try {
    if (command === undefined) throw new UsageError(`unknown command ${JSON.stringify(name)}; the commands are ${Object.keys(COMMANDS).join(', ')}`);
    if (rest.includes('--help') || rest.includes('-h')) {
      process.stdout.write(command.usage);
      return EXIT.ok;
    }
    return await command.run(rest, context);
  } catch (err) {
    return reportFailure(err, { command: label, json, debug, origins: context.origins });
  }
}

process.exitCode = await main(process.argv.slice(2));
