/**
 * Instructions per request, counted by valgrind's callgrind in servers that run under it
 * (`node bench/me.mjs --instructions N`). A count of executed instructions does not depend on what
 * else the machine is doing, so it tells two servers apart where req/s on a shared machine cannot.
 *
 * Each server runs as `valgrind --tool=callgrind --instr-atstart=no node server.mjs`: at full
 * (uninstrumented) valgrind speed while it warms up, then once more with instrumentation on, then,
 * per repeat, counting is switched on, the counters zeroed, exactly N requests sent, and the
 * counters dumped (callgrind_control).
 */
import { spawnSync } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import http from 'node:http';
import { join } from 'node:path';

/**
 * The command line that runs a Node script under callgrind, counting off, its dumps in `dir`. With
 * `simulate`, callgrind also simulates the caches and the branch predictors (and runs slower).
 */
export function callgrindCommand(dir, name, nodeArgs, simulate = false) {
  return [
    'valgrind',
    [
      '--tool=callgrind',
      '--instr-atstart=no',
      ...(simulate ? ['--cache-sim=yes', '--branch-sim=yes'] : []),
      `--callgrind-out-file=${join(dir, `${name}.%p.out`)}`,
      process.execPath,
      ...nodeArgs,
    ],
  ];
}

function control(pid, flag) {
  const done = spawnSync('callgrind_control', [flag, String(pid)], { encoding: 'utf8' });
  if (done.status !== 0) throw new Error(`callgrind_control ${flag} ${pid}: ${done.stderr || done.stdout}`);
}

/**
 * Sends exactly `count` GET requests with `concurrency` keep-alive connections; rejects on any
 * answer but 200 (a run that counted errors would count the wrong work). A request that finds its
 * reused connection closed by the server (whose keep-alive timeout valgrind's slowdown can outlast)
 * is sent again, once, on a new one: the server never saw it.
 */
export async function drive({ origin, cookie }, count, concurrency) {
  const agent = new http.Agent({ keepAlive: true, maxSockets: concurrency });
  const url = new URL('/me', origin);
  let sent = 0;
  const one = (retry = true) =>
    new Promise((resolve, reject) => {
      const request = http.get(url, { agent, headers: { cookie } }, (response) => {
        response.resume();
        response.once('end', () =>
          response.statusCode === 200
            ? resolve()
            : reject(new Error(`GET /me answered ${response.statusCode}`)),
        );
      });
      request.setTimeout(60_000, () => request.destroy(new Error('GET /me: no answer within 60 s')));
      request.once('error', (error) => {
        if (retry && request.reusedSocket && error.code === 'ECONNRESET') one(false).then(resolve, reject);
        else reject(error);
      });
    });
  const worker = async () => {
    while (sent < count) {
      sent++;
      await one();
    }
  };
  try {
    await Promise.all(Array.from({ length: concurrency }, worker));
  } finally {
    agent.destroy();
  }
}

/**
 * The totals of the newest dump of a process, by event (`Ir`, the executed instructions, and with
 * the simulation also cache misses such as `I1mr` and mispredicted branches such as `Bcm`).
 */
function lastTotals(dir, name, pid, before) {
  const dumps = readdirSync(dir).filter((f) => f.startsWith(`${name}.${pid}.out`) && !before.has(f));
  if (dumps.length !== 1)
    throw new Error(`expected one new callgrind dump of ${name}, found ${dumps.length}`);
  before.add(dumps[0]);
  const text = readFileSync(join(dir, dumps[0]), 'utf8');
  const events = /^events: (.+)$/m.exec(text)?.[1]?.trim().split(/\s+/);
  const totals = /^(?:totals|summary): ([\d ]+)$/m.exec(text)?.[1]?.trim().split(/\s+/).map(Number);
  if (!events || !totals || events[0] !== 'Ir') throw new Error(`no instruction total in ${dumps[0]}`);
  return Object.fromEntries(events.map((event, i) => [event, totals[i] ?? 0]));
}

/**
 * Warms every server up (all at once: counts do not depend on the machine's load), then counts each
 * one's instructions over `requests` requests, `repeats` times. Returns, by server name, one entry
 * per repeat: each event's count per request (`Ir`: instructions).
 */
export async function countInstructions({ servers, dir, requests, warmup, repeats, concurrency, log }) {
  await Promise.all(servers.map((server) => drive(server, warmup, concurrency)));
  // The first instrumented stretch counts more than the ones after it (seen: +25 %, whatever the
  // server): one more warm-up of `requests` requests with counting on, not kept.
  await Promise.all(
    servers.map(async (server) => {
      control(server.child.pid, '--instr=on');
      await drive(server, requests, concurrency);
      control(server.child.pid, '--instr=off');
    }),
  );
  log(`warm-up done (${warmup} requests each, then ${requests} instrumented)`);
  const counts = Object.fromEntries(servers.map((s) => [s.name, []]));
  const seen = new Set(readdirSync(dir));
  for (let repeat = 1; repeat <= repeats; repeat++) {
    await Promise.all(
      servers.map(async (server) => {
        const pid = server.child.pid;
        control(pid, '--instr=on');
        control(pid, '--zero');
        await drive(server, requests, concurrency);
        control(pid, '--dump');
        control(pid, '--instr=off');
        const totals = lastTotals(dir, server.name, pid, seen);
        const perRequest = Object.fromEntries(Object.entries(totals).map(([e, n]) => [e, n / requests]));
        counts[server.name].push(perRequest);
        log(
          `repeat ${repeat}/${repeats} ${server.name.padEnd(11)} ${Math.round(perRequest.Ir)} instructions/request`,
        );
      }),
    );
  }
  return counts;
}
