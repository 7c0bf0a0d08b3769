// What every `uffd` subcommand provides, so that `--help`, `--json` errors, `--debug` and the exit codes are
// handled once, in main.ts, for all of them.

export interface CommandContext {
  /** Paths from the command line and the option each came from, so a failure can name the option to fix. */
  readonly origins: Map<string, string>;
}

export interface Command {
  /** One line for `uffd --help`. */
  readonly summary: string;
  /** The full text `uffd <command> --help` prints. */
  readonly usage: string;
  /** Returns the exit code; throws UsageError for a bad command line, anything else for a failure. */
  run(args: string[], context: CommandContext): number | Promise<number>;
}
