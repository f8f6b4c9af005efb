/** An injected clock for stores: starts at the real time (so child processes agree) and only moves when told. */
export interface TestClock {
  now(): number;
  advance(ms: number): void;
}

export function createClock(start = Date.now()): TestClock {
  let t = start;
  return {
    now: () => t,
    advance: (ms) => {
      t += ms;
    },
  };
}
