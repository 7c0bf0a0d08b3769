// Machine facts read without the addon agree with what the addon and the kernel report.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { test } from 'node:test';
import { native } from '../src/binding.js';
import { hugePageSize, PAGE_SIZE } from '../src/system.js';

test('PAGE_SIZE from the auxiliary vector is sysconf(_SC_PAGESIZE) and getconf PAGESIZE', () => {
  assert.equal(PAGE_SIZE, native.pageSize());
  assert.equal(PAGE_SIZE, Number(execFileSync('getconf', ['PAGESIZE'], { encoding: 'latin1' }).trim()));
});

const huge = hugePageSize();
test('the default huge page size is a power-of-two multiple of the base page', { skip: huge === 0 ? 'no hugetlb in /proc/meminfo' : false }, () => {
  assert.equal(huge % PAGE_SIZE, 0);
  assert.equal(huge & (huge - 1), 0);
});
