import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { describe, expect, it } from 'vitest';
import { UNKNOWN_VERSION, agentPlatform, readAgentVersion } from '../../../edge/status/agent-version.js';
import { AGENT } from '../../../edge/status/status.js';

function pkg(text: string | null): URL {
  const dir = mkdtempSync(join(tmpdir(), 'agent-version-'));
  const file = join(dir, 'package.json');
  if (text !== null) writeFileSync(file, text);
  return pathToFileURL(file);
}

describe('readAgentVersion', () => {
  it('reads the version of a good package.json', () => {
    expect(readAgentVersion(pkg(JSON.stringify({ name: 'apprentice', version: '1.2.3-rc.1' })))).toEqual({ version: '1.2.3-rc.1' });
  });
  it('falls back, saying why, when package.json is missing', () => {
    const r = readAgentVersion(pkg(null));
    expect(r.version).toBe(UNKNOWN_VERSION);
    expect(r.error).toMatch(/cannot read/);
  });
  it('falls back on malformed JSON and on a missing or invalid version', () => {
    expect(readAgentVersion(pkg('{not json'))).toMatchObject({ version: UNKNOWN_VERSION, error: expect.stringMatching(/not JSON/) });
    expect(readAgentVersion(pkg('{"name":"x"}'))).toMatchObject({ version: UNKNOWN_VERSION, error: expect.stringMatching(/no valid version/) });
    expect(readAgentVersion(pkg('{"version":"1 2; rm"}'))).toMatchObject({ version: UNKNOWN_VERSION });
  });
  it('the daemon reports the repo package.json version and the platform', async () => {
    const { readFileSync } = await import('node:fs');
    const repo = JSON.parse(readFileSync(new URL('../../../package.json', import.meta.url), 'utf8')) as { version: string };
    expect(AGENT).toBe(`apprentice-edge/${repo.version}`);
    expect(agentPlatform()).toBe(`${process.platform}-${process.arch}`);
  });
});
