/**
 * labgate's core: "Sign in with GitLab" and GitLab-based access for any app, as a fetch handler on
 * Web APIs only (`Request`, `Response`, `fetch`, WebCrypto). Adapters translate for each framework.
 *
 * @example
 * ```ts
 * import { createLabgate } from 'labgate';
 * const labgate = createLabgate({ clientId, clientSecret, url: 'https://app.example.com', secret });
 * ```
 * @packageDocumentation
 */

export {
  ACCESS_LEVELS,
  type AccessFacts,
  type AccessFailure,
  type AccessLevel,
  type AccessLevelName,
  accessFailureText,
  accessLevelOf,
  type Decision,
  evaluateAccess,
  formatRule,
  needsMemberships,
  normalisePolicy,
  type Policy,
  parsePolicy,
  parseRule,
  type Requirement,
  type Rule,
  scopesForPolicy,
} from './access.js';
export { KeyRing, parseSecrets } from './crypto.js';
export { ERROR_CODES, isLabgateError, LabgateError, type LabgateErrorCode } from './errors.js';
export type { LabgateEventHandler, LabgateEventName, LabgateEvents } from './events.js';
export {
  createGitLabClient,
  GitLabApiError,
  type GitLabClient,
  type GitLabClientOptions,
  type Query,
  type RequestOptions,
} from './gitlab.js';
export type {
  Guard,
  GuardOutcome,
  GuardRequest,
  GuardRule,
} from './guards.js';
export { createLabgate, type Labgate } from './labgate.js';
export {
  isLoopbackHost,
  type LabgateOptions,
  type Logger,
  optionsFromEnv,
  type ResolvedOptions,
} from './options.js';
export { safeReturnTo } from './redirects.js';
export { routeOf } from './routes.js';
export type { Session, SessionInfo } from './sessions.js';
export {
  type IdentityRecord,
  MemoryStore,
  type SessionRecord,
  type SessionUser,
  type Store,
  type TokenSet,
} from './store.js';
export type { TokenCheck } from './tokens.js';
