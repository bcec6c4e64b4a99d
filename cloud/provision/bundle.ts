import { z } from 'zod';
import { deviceId } from '../../shared/protocol/schemas.js';
import { signedKeySetSchema } from '../../shared/protocol/keyset.js';

/**
 * The edge config bundle `POST /v1/devices` returns exactly once: everything a device needs to reach the
 * broker and to verify releases. The MQTT password appears nowhere else (the registry keeps only its hash).
 * `apprentice provision` writes it as the device's edge.json (mode 0600).
 */
export const trustedKeySchema = z.strictObject({
  keyId: z.string().regex(/^[0-9a-f]{16}$/, 'expected a 16-hex-digit key id'),
  publicKeyPem: z.string().startsWith('-----BEGIN PUBLIC KEY-----'),
});

export const BUNDLE_VERSION = 1;

export const provisionBundleSchema = z.strictObject({
  version: z.literal(BUNDLE_VERSION),
  deviceId,
  mqtt: z.strictObject({
    url: z.string().regex(/^(mqtts?|wss?):\/\//, 'expected an mqtt://, mqtts://, ws:// or wss:// URL'),
    /** Always the device id: the broker ACL's `%u` patterns rely on it. */
    username: deviceId,
    password: z.string().min(16),
  }),
  /** Public keys the device accepts release signatures from (several during a key rotation). */
  trustedKeys: z.array(trustedKeySchema).min(1),
  /**
   * The offline root's public key, once a root-signed key set is published (issue 10): the device then
   * trusts key sets under this root from its first connect, with no trust-on-first-use bootstrap.
   */
  rootKey: trustedKeySchema.optional(),
  /**
   * The cloud's current root-signed key set: a device provisioned after a rotation trusts the new
   * release keys from its first start, with no key-set message over MQTT (verified under `rootKey`).
   */
  keyset: signedKeySetSchema.optional(),
});
export type ProvisionBundle = z.infer<typeof provisionBundleSchema>;
