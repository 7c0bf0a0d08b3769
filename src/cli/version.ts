// `uffd --version`: this package's version, and what it runs on.
import { existsSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

/** The package.json above this file (dist/src/cli compiled, src/cli under a TS loader). */
function packageJson(): { name: string; version: string } {
  for (let dir = dirname(fileURLToPath(import.meta.url)); ; dir = dirname(dir)) {
    const path = join(dir, 'package.json');
    if (existsSync(path)) return JSON.parse(readFileSync(path, 'utf8')) as { name: string; version: string };
    if (dirname(dir) === dir) return { name: 'userfaultfd', version: 'unknown' };
  }
}

export interface VersionReport {
  name: string;
  version: string;
  node: string;
  platform: string;
  arch: string;
}

export function versionReport(): VersionReport {
  const { name, version } = packageJson();
  return { name, version, node: process.version, platform: process.platform, arch: process.arch };
}

export function renderVersion(report: VersionReport): string {
  return `uffd ${report.version} (${report.name} on Node ${report.node}, ${report.platform}-${report.arch})\n`;
}
