export { KeyStore, KeyStoreError, keysDirIn, assertPrivateMode, SIGNING_KEY_ENV, KEYS_DIR, KEY_INDEX_FILE, type KeyInfo, type KeySource, type KeyStoreOptions } from './store.js';
export { writeFileAtomicSync } from './atomic.js';
export { keysCommand } from './cli.js';
