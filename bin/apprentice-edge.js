#!/usr/bin/env node
// Thin launcher of the edge daemon alone (dist/bin/edge.js); see bin/edge.ts.
import('../dist/bin/edge.js').catch((err) => {
  if (err && err.code === 'ERR_MODULE_NOT_FOUND' && String(err.message).includes('dist/bin/edge.js')) {
    console.error('apprentice-edge: not built yet; run `npm run build` first');
    process.exit(2);
  }
  throw err;
});
