#!/usr/bin/env node
// Thin launcher: the CLI is TypeScript compiled to dist/ by `npm run build` (run by `npm install` via prepare).
import('../dist/bin/main.js').catch((err) => {
  if (err && err.code === 'ERR_MODULE_NOT_FOUND' && String(err.message).includes('dist/bin/main.js')) {
    console.error('apprentice: not built yet; run `npm run build` first');
    process.exit(2);
  }
  throw err;
});
