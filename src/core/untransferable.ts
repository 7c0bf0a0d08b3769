// ArrayBuffer.prototype.transfer() (Node 21+) moves a buffer's memory into a new ArrayBuffer that the
// Mapping never handed out, so close() cannot detach it, and touching it after close() is SIGSEGV on the
// PROT_NONE range. Node-API cannot make an external ArrayBuffer non-detachable (V8's detach key is not
// exposed, and markAsUntransferable() does not stop transfer()), so the two transfer methods refuse the
// buffers that are mapped memory. Every other ArrayBuffer goes to the original method unchanged.
// (structuredClone and postMessage already refuse or copy external buffers; they never move them.)

const mapped = new WeakSet<ArrayBuffer>();

/** Marks a buffer over mapped memory: transfer() and transferToFixedLength() throw a TypeError on it. */
export function markUntransferable(buffer: ArrayBuffer): void {
  mapped.add(buffer);
}

function guard(name: 'transfer' | 'transferToFixedLength'): void {
  const proto = ArrayBuffer.prototype as unknown as Record<string, unknown>;
  const original = proto[name];
  if (typeof original !== 'function') return; // Node 20: nothing can move the memory
  const guarded = {
    [name](this: ArrayBuffer, ...args: unknown[]): unknown {
      if (mapped.has(this)) {
        throw Object.assign(new TypeError(`ArrayBuffer.prototype.${name}: this buffer is mapped memory owned by a Mapping and cannot be transferred; copy it with slice()`), { code: 'ERR_UFFD_UNTRANSFERABLE' });
      }
      return Reflect.apply(original, this, args);
    },
  }[name];
  Object.defineProperty(guarded, 'length', { value: original.length });
  Object.defineProperty(proto, name, { value: guarded, writable: true, configurable: true, enumerable: false });
}

guard('transfer');
guard('transferToFixedLength');
