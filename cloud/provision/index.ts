export { provisionBundleSchema, trustedKeySchema, BUNDLE_VERSION, type ProvisionBundle } from './bundle.js';
export { provisionDevice, type ProvisionRequest } from './client.js';
export { generatePassword, hashPassword, verifyPassword, isPasswordHash, formatPasswordFile, parsePasswordFile, MOSQUITTO_PBKDF2_ITERATIONS } from './passwd.js';
export { writeBrokerAuth, aclText, DEFAULT_CLOUD_USER, PASSWD_FILE, ACL_FILE, type BrokerAuthOptions, type BrokerAuthResult } from './broker-auth.js';
export { provisionCommand, brokerAuthCommand, registryPathIn, REGISTRY_FILE } from './cli.js';
