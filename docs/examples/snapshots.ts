import { applyIncremental, DirtyTracker, Mapping, Snapshot } from 'userfaultfd';
import { readFileSync } from 'node:fs';

using memory = Mapping.anonymous(64 << 20);
const bytes = new Uint8Array(memory.buffer);
using tracker = DirtyTracker.open(memory, { method: 'sync' });  // snapshots need 'sync' ('auto' may pick 'async')
const base = await Snapshot.start(memory, { path: '/data/snapshots/base.img', tracker }); // the tracker restarts here
bytes.fill(1, 0, 4096);                       // page 0 is copied before this write lands
console.log((await base.done).pagesCopied);   // 16384: the whole 64 MiB, as it was at start()
bytes.fill(2, 8192, 12288);                   // page 2
const delta = await Snapshot.start(memory, { path: '/data/snapshots/delta.img', incremental: tracker });
console.log((await delta.done).pagesCopied);  // 2: pages 0 and 2, written since the base
applyIncremental('/data/snapshots/base.img', '/data/snapshots/delta.img');
console.log(readFileSync('/data/snapshots/base.img').equals(bytes));   // true
