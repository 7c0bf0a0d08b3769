// Worker: holds a uv_poll watcher open on a uffd (an events() iterator that never gets an event), then
// exits as told, to show that worker teardown closes the watcher instead of aborting the process.
import { parentPort, workerData } from 'node:worker_threads';
import { Userfaultfd } from '../../src/index.js';

const { exit } = workerData as { exit: 'process.exit' | 'terminate' | 'close' };
const uffd = Userfaultfd.open();
const iterating = (async () => {
  for await (const event of uffd.events()) console.log("unexpected", event.type);
  return 'ended';
})();
parentPort?.postMessage({ ready: true });
if (exit === 'process.exit') setTimeout(() => process.exit(7), 20);
if (exit === 'close') {
  setTimeout(() => {
    uffd.close(); // ends the iterator; with the watcher gone the worker's loop empties and it exits
    void iterating.then((how) => parentPort?.postMessage({ how }));
  }, 20);
}
