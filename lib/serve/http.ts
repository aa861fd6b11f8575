// The HTTP server lives in ./http/ (index.ts there says which file holds what). This path stays
// for the importers outside this change's reach (lib/cli/serve.ts); new code imports ./http/index.js.
export * from './http/index.js';
