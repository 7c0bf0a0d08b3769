// The benchmarks' scale knobs: positive integers from the environment.
export function envCount(name: string, fallback: number, max = Number.MAX_SAFE_INTEGER): number {
  const raw = process.env[name];
  if (raw === undefined || raw === '') return fallback;
  const n = Number(raw);
  if (!Number.isSafeInteger(n) || n <= 0 || n > max) throw new RangeError(`${name} must be an integer in [1, ${String(max)}], got '${raw}'`);
  return n;
}
