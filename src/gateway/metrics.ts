/**
 * The gateway's Prometheus metrics (docs/gateway.md, "Operations"), served on their own listen address:
 * requests by outcome, sign-ins, denials, token refreshes, and upstream latency. The text exposition
 * format is a few lines for five metrics, so it is written here rather than pulled in.
 */

/** Why a request ended as it did. */
export type Outcome =
  | 'proxied'
  | 'skipped'
  | 'unauthenticated'
  | 'redirected'
  | 'denied'
  | 'authorized'
  | 'endpoint'
  | 'invalid'
  | 'upstream_error'
  | 'unavailable';

const BUCKETS = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];

/** Counters and the latency histogram of one gateway. */
export interface Metrics {
  request(outcome: Outcome): void;
  signIn(): void;
  denied(): void;
  refreshed(): void;
  /** An upstream answer's latency (headers received), in milliseconds. */
  upstream(ms: number): void;
  /** The exposition text. */
  render(): string;
}

/** Creates the metrics of one gateway. */
export function createMetrics(): Metrics {
  const outcomes = new Map<Outcome, number>();
  let signIns = 0;
  let denials = 0;
  let refreshes = 0;
  const buckets = new Array<number>(BUCKETS.length).fill(0);
  let count = 0;
  let sum = 0;
  return {
    request: (outcome) => outcomes.set(outcome, (outcomes.get(outcome) ?? 0) + 1),
    signIn: () => void signIns++,
    denied: () => void denials++,
    refreshed: () => void refreshes++,
    upstream(ms) {
      const seconds = ms / 1000;
      count++;
      sum += seconds;
      for (let i = 0; i < BUCKETS.length; i++) if (seconds <= BUCKETS[i]!) buckets[i]!++;
    },
    render() {
      const lines = [
        '# HELP labgate_gateway_requests_total Requests by outcome.',
        '# TYPE labgate_gateway_requests_total counter',
        ...[...outcomes].map(([o, n]) => `labgate_gateway_requests_total{outcome="${o}"} ${n}`),
        '# HELP labgate_gateway_signins_total Completed sign-ins.',
        '# TYPE labgate_gateway_signins_total counter',
        `labgate_gateway_signins_total ${signIns}`,
        '# HELP labgate_gateway_denials_total Requests of signed-in users refused by an access rule.',
        '# TYPE labgate_gateway_denials_total counter',
        `labgate_gateway_denials_total ${denials}`,
        '# HELP labgate_gateway_token_refreshes_total GitLab access tokens refreshed.',
        '# TYPE labgate_gateway_token_refreshes_total counter',
        `labgate_gateway_token_refreshes_total ${refreshes}`,
        '# HELP labgate_gateway_upstream_seconds Time until the upstream answered (headers).',
        '# TYPE labgate_gateway_upstream_seconds histogram',
        ...BUCKETS.map((b, i) => `labgate_gateway_upstream_seconds_bucket{le="${b}"} ${buckets[i]}`),
        `labgate_gateway_upstream_seconds_bucket{le="+Inf"} ${count}`,
        `labgate_gateway_upstream_seconds_sum ${sum}`,
        `labgate_gateway_upstream_seconds_count ${count}`,
      ];
      return `${lines.join('\n')}\n`;
    },
  };
}
