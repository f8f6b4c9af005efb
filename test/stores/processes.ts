/**
 * Races separate OS processes on one store: each child (`fixtures/child.mjs`) opens the same store,
 * says it is ready, and all start together on `go`, so the race is real and not an artefact of one
 * event loop.
 */
import { type ChildProcess, fork } from 'node:child_process';
import { fileURLToPath } from 'node:url';

/** How a child opens the same store as the test; plain data, sent on the command line. */
export type SharedStore =
  | { kind: 'sqlite'; path: string }
  | { kind: 'postgres'; config: Record<string, unknown> }
  | { kind: 'redis'; url: string; prefix: string };

/** What a child does once told to go. */
export type ChildTask = { mode: 'take'; keys: string[] } | { mode: 'open' };

/** What a child answered. */
export interface ChildResult {
  taken?: Record<string, string | null>;
  opened?: boolean;
  error?: string;
}

const CHILD = fileURLToPath(new URL('./fixtures/child.mjs', import.meta.url));

function exited(child: ChildProcess): Promise<number | null> {
  return new Promise((resolve) => {
    if (child.exitCode !== null) resolve(child.exitCode);
    else child.once('exit', (code) => resolve(code));
  });
}

/**
 * Forks `count` children on `store`, starts them together, and returns each child's answer (in fork
 * order) once all have exited. Fails, killing the children, when one is not done within `timeoutMs`.
 */
export async function race(
  store: SharedStore,
  task: ChildTask,
  count: number,
  timeoutMs = 30_000,
): Promise<ChildResult[]> {
  const spec = JSON.stringify({ store, ...task });
  const children = Array.from({ length: count }, () =>
    fork(CHILD, [spec], { execArgv: [], stdio: ['ignore', 'inherit', 'inherit', 'ipc'] }),
  );
  const timer = setTimeout(() => {
    for (const child of children) child.kill('SIGKILL');
  }, timeoutMs);
  try {
    const answers = children.map(
      (child, i) =>
        new Promise<ChildResult>((resolve, reject) => {
          child.on('message', (message) => {
            if (message !== 'ready') resolve(message as ChildResult);
          });
          child.once('exit', (code, signal) =>
            reject(new Error(`child ${i} exited (${signal ?? code}) before answering`)),
          );
          child.once('error', reject);
        }),
    );
    const ready = children.map(
      (child, i) =>
        new Promise<void>((resolve, reject) => {
          child.on('message', (message) => {
            if (message === 'ready') resolve();
            else if ((message as ChildResult).error)
              reject(new Error(`child ${i}: ${(message as ChildResult).error}`));
          });
          child.once('exit', (code, signal) =>
            reject(new Error(`child ${i} exited (${signal ?? code}) before ready`)),
          );
        }),
    );
    // Swallow the late rejections of whichever promise loses; the awaited ones report failures.
    for (const p of [...answers, ...ready]) p.catch(() => undefined);
    await Promise.all(ready);
    for (const child of children) child.send('go');
    const results = await Promise.all(answers);
    const codes = await Promise.all(children.map(exited));
    codes.forEach((code, i) => {
      if (code !== 0 && !results[i]!.error) results[i] = { ...results[i], error: `exit code ${code}` };
    });
    return results;
  } finally {
    clearTimeout(timer);
    for (const child of children)
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  }
}
