#!/usr/bin/env node
// The bundled CLI (scripts/bundle-cli.mjs, made by `npm run build`): one file and a chunk
// per command instead of the ~45 modules under dist/ that the library is made of.
import { main } from '../dist/cli/bundle.js';

await main(process.argv);
