import type { Logger } from '../../shared/log/index.js';
import type { StoreRegistry } from '../registry/open.js';
import type { ConsoleData } from './data.js';
import type { LiveHub } from './live.js';
import type { Session } from './session.js';

/** A call to the cloud's own JSON API, in process (app.request, no socket) with the admin token. */
export type ApiCall = <T>(path: string, init?: { method?: 'GET' | 'POST'; body?: unknown; /** Recorded as the audit actor of the action. */ actor?: string }) => Promise<T>;

export class ApiCallError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
  ) {
    super(message);
  }
}

/** The same in-process call, answered as the API's own Response (bytes streamed, headers kept): downloads. */
export type ApiRaw = (path: string, headers?: Record<string, string>) => Promise<Response>;

export interface UiContext {
  api: ApiCall;
  apiRaw: ApiRaw;
  data: ConsoleData;
  registry: StoreRegistry;
  dataDir: string;
  live: LiveHub;
  log: Logger;
  /** Still signed in (not expired, not logged out)? Long-lived streams check it before each message. */
  sessionLive: (s: Session) => Promise<boolean>;
}

/** The audit actor of a console session (cloud/audit): `session:<first 12 of its id>/<the name typed at login>`. */
export const actorOf = (s: Session): string => `session:${s.sid.slice(0, 12)}/${s.who}`;
