import { test } from 'node:test';
import assert from 'node:assert/strict';
import { FeatureSet, IoctlSet } from '../src/index.js';

test('FeatureSet.fromMask keeps unknown bits and shows them as `bit N`', () => {
  const set = FeatureSet.fromMask((1n << 17n) | (1n << 40n) | 0b101n);
  assert.deepEqual(set.names, ['PAGEFAULT_FLAG_WP', 'EVENT_REMAP']);
  assert.deepEqual(set.unknownBits, [17, 40]);
  assert.deepEqual(set.toJSON(), ['PAGEFAULT_FLAG_WP', 'EVENT_REMAP', 'bit 17', 'bit 40']);
  assert.equal(JSON.stringify({ set }), '{"set":["PAGEFAULT_FLAG_WP","EVENT_REMAP","bit 17","bit 40"]}');
  assert.equal(set.size, 4);
  assert.equal(set.mask, (1n << 17n) | (1n << 40n) | 0b101n);
  assert.ok(set.has('EVENT_REMAP'));
  assert.ok(!set.has('MOVE'));
  assert.deepEqual([...set], ['PAGEFAULT_FLAG_WP', 'EVENT_REMAP']);
});

test('FeatureSet.fromNames builds the mask; unknown names are a TypeError', () => {
  assert.equal(FeatureSet.fromNames(['MOVE', 'SIGBUS']).mask, (1n << 16n) | (1n << 7n));
  assert.throws(() => FeatureSet.fromNames(['NOPE' as never]), { name: 'TypeError', message: /"NOPE"/ });
});

test('masks outside the u64 range are refused', () => {
  assert.throws(() => FeatureSet.fromMask(-1n), RangeError);
  assert.throws(() => IoctlSet.fromMask(1n << 64n), RangeError);
});

test('IoctlSet names the API bit 63 and keeps unknown ioctl bits', () => {
  const set = IoctlSet.fromMask(0x8000000000000003n | (1n << 9n));
  assert.deepEqual(set.toJSON(), ['REGISTER', 'UNREGISTER', 'API', 'bit 9']);
});
