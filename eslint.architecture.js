// The layering of src/ as lint rules (ARCHITECTURE.md explains it): imports point down only.
//   cli, applications (fill lazy policy sources server track metrics)  ->  core/, probe/  ->  binding.ts  ->  kernel
// with the pure definitions (abi, errors, system, validate) below everything. Only core/ and probe/ load the
// addon, so an application calls no native function itself; core/ and probe/ import no application; the
// Firecracker and CRIU protocols never import each other. test/architecture.test.ts proves each rule fires.

export const APPLICATIONS = ['fill', 'lazy', 'policy', 'sources', 'server', 'track', 'metrics', 'cli'];

const binding = {
  regex: '(^|/)binding\\.js$',
  message: 'Only src/core/ and src/probe/ import the native binding: go through a core function.',
};
const applications = (up) => ({
  regex: `^${up}(${APPLICATIONS.join('|')})/`,
  message: 'The core and the probes sit below the applications and import none of them.',
});
const aboveDefinitions = {
  regex: `^\\./(core|probe|${APPLICATIONS.join('|')})/`,
  message: 'abi, errors, system and validate are definitions below everything: they import no layer above.',
};
const protocol = (other) => ({
  regex: `(^|/)${other}/`,
  message: 'server/firecracker and server/criu are independent protocols: share code through server/, not each other.',
});

function restrict(files, ignores, patterns) {
  return { files, ignores, rules: { 'no-restricted-imports': ['error', { patterns }] } };
}

// One entry per area, the areas disjoint: a later entry would replace (not add to) an earlier one's patterns.
export default [
  restrict(['src/core/**/*.ts', 'src/probe/**/*.ts'], [], [applications('\\.\\./')]),
  restrict(['src/*.ts'], ['src/index.ts', 'src/binding.ts'], [binding, aboveDefinitions]),
  restrict(['src/server/firecracker/**/*.ts'], [], [binding, protocol('criu')]),
  restrict(['src/server/criu/**/*.ts'], [], [binding, protocol('firecracker')]),
  restrict(['src/**/*.ts'], ['src/*.ts', 'src/core/**', 'src/probe/**', 'src/server/firecracker/**', 'src/server/criu/**'], [binding]),
];
