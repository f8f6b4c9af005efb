/**
 * What `labgate doctor` (and `labgate init`, which runs its checks) reports: one result a check, with
 * the fix for anything that is not right and where the docs explain it (docs/doctor.md).
 */

/** ✓ passed, ⚠ works but should change, ✗ broken, – not run (a check it depends on failed, or not asked). */
export type CheckStatus = 'ok' | 'warn' | 'fail' | 'skip';

/** One check's result. */
export interface CheckResult {
  /** Stable id, for `--json` and the docs anchor (`gitlab-reachable`, `client-credentials`, …). */
  id: string;
  /** What was checked, one line (`GitLab answers at https://gitlab.example.com`). */
  title: string;
  status: CheckStatus;
  /** What was found, one or more lines; never a secret or token. */
  detail?: string;
  /** What to do, for `warn` and `fail`: the exact setting or command. */
  fix?: string;
  /** The docs section that explains it (`docs/doctor.md#client-credentials`). */
  docs?: string;
}

/** The symbol of a status, as printed. */
export const SYMBOLS: Readonly<Record<CheckStatus, string>> = { ok: '✓', warn: '⚠', fail: '✗', skip: '–' };
