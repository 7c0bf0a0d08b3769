// A VMM written with the library itself, for the page-server tests: maps guest memory, registers it on a
// uffd (EVENT_REMOVE required, as Firecracker does), sends the Firecracker handshake of the chosen version,
// then touches pages and checks each against the memory file. It prints one JSON line with the result.
//   node node-vmm.js SOCKET MEMORY_FILE [--protocol 1.1|1.7|1.12] [--regions N] [--touch N] [--die-after N] [--balloon]
//     [--undescribed]  registers one more region than it describes, and touches it last
import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { Mapping, Userfaultfd } from '../../src/index.js';
import { UnixConnection } from '../../src/server/unix-socket.js';

const { values, positionals } = parseArgs({
  allowPositionals: true,
  options: { protocol: { type: 'string' }, regions: { type: 'string' }, touch: { type: 'string' }, 'die-after': { type: 'string' }, balloon: { type: 'boolean' }, undescribed: { type: 'boolean' } },
});
const [socket, memoryPath] = positionals;
if (socket === undefined || memoryPath === undefined) throw new Error('usage: node-vmm SOCKET MEMORY_FILE [options]');
const protocol = values.protocol ?? '1.12';
const file = readFileSync(memoryPath);
const regionCount = Number(values.regions ?? '2');
const regionSize = file.length / regionCount;
const maps = Array.from({ length: regionCount }, () => Mapping.anonymous(regionSize));
const uffd = Userfaultfd.open({ require: ['EVENT_REMOVE'] });
for (const m of maps) uffd.register(m, { missing: true });

const region = (m: Mapping, offset: number): string => {
  const base = `"base_host_virt_addr":${m.address.toString()},"size":${String(regionSize)},"offset":${String(offset)}`;
  if (protocol === '1.1') return `{${base}}`;
  if (protocol === '1.7') return `{${base},"page_size_kib":4096}`;
  return `{${base},"page_size":4096,"page_size_kib":4096}`;
};
const body = `[${maps.map((m, i) => region(m, i * regionSize)).join(',')}]`;
const hidden = values.undescribed === true ? Mapping.anonymous(4096) : undefined;
if (hidden !== undefined) uffd.register(hidden, { missing: true });
const conn = UnixConnection.connect(socket);
conn.send(Buffer.from(body), [uffd.fd]);
if (protocol !== '1.12') conn.close(); // Firecracker before 1.12 closes its end right after the handshake

const pagesPerRegion = regionSize / 4096;
const touch = Number(values.touch ?? String(pagesPerRegion * regionCount));
const dieAfter = values['die-after'] === undefined ? Infinity : Number(values['die-after']);
let bad = 0;
let touched = 0;
for (let i = 0; i < touch; i++) {
  if (touched === dieAfter) process.kill(process.pid, 'SIGKILL'); // dies with faults of its other threads outstanding
  const r = i % regionCount;
  const page = Math.floor(i / regionCount);
  const view = new Uint8Array(maps[r]!.buffer);
  const at = page * 4096 + (page % 4091);
  if (view[at] !== file[r * regionSize + at]) bad++;
  touched++;
}
if (hidden !== undefined) {
  process.stdout.write(`${JSON.stringify({ bad, touched })}\n`);
  // Nobody was told about this page: the server must not leave it silent. (Never returns: killed by the test.)
  if (new Uint8Array(hidden.buffer)[0] !== 0) bad++;
}
if (values.balloon === true) {
  // Balloon: the guest gives pages back; read again they are zeros (the server must not refill them).
  maps[0]!.madvise('DONTNEED', 0, 8 * 4096);
  const view = new Uint8Array(maps[0]!.buffer);
  for (let p = 0; p < 8; p++) if (view[p * 4096 + 1] !== 0) bad++;
}
process.stdout.write(`${JSON.stringify({ bad, touched })}\n`);
