import { LazyMemory, fileSource } from 'userfaultfd';

const lazy = await LazyMemory.open({ source: fileSource('/data/model.bin'), readahead: 'auto' });
const bytes = new Uint8Array(lazy.buffer);   // touch freely from this thread (lazy.view(off, len) past 4 GiB on Node 20)
console.log(bytes[123_456_789], lazy.stats()); // { faults, pagesServed, bytesServed, readaheadPages, ..., serviceMicros }
await lazy.close();
