import { Mapping, Userfaultfd, isEexist, probe } from 'userfaultfd';

console.log(probe().features.toJSON());           // what this kernel offers, by name
using uffd = Userfaultfd.open({ request: ['THREAD_ID', 'EVENT_REMOVE'] });   // enabled where offered
console.log(uffd.features.toJSON());              // what is really enabled (checked against fdinfo)
using memory = Mapping.anonymous(1 << 20);
console.log(uffd.register(memory, { missing: true }).toJSON());   // the ioctls this range allows
// Faults raised by *another* thread or process arrive here; never touch `memory` from this thread.
for await (const event of uffd.events({ signal: AbortSignal.timeout(100) })) {
  if (event.type !== 'pagefault') continue;
  try {
    uffd.copy(event.address, new Uint8Array(4096).fill(7));
  } catch (err) {
    if (!isEexist(err)) throw err;   // already there (a race, a repeated message): wake the faulter instead
    uffd.wake({ address: event.address, length: 4096 });
  }
}
