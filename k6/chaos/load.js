// The seed's sine load for `orderflow chaos`: k6/lib's sine shape and order generator, plus the
// bookkeeping the chaos ledger needs.
//
// - Every order carries an Idempotency-Key chosen here (RUN_ID + k6's global iteration number),
//   so the order id (key-<key>) is known before the answer arrives.
// - A 503 (NATS restarting) or no answer at all (ingest restarting) is retried with the same key
//   after Retry-After, for at most RETRY_FOR: what a well-behaved client does. A retry inside the
//   duplicate window never creates a second order, so the ledger also checks idempotency.
// - Every answer is one raw log line "<unix ms> <status> <key> <try>" (the driver runs k6 with
//   --log-format=raw --log-output=file=...); the keys answered 200 are the ledger's orders.
//
//   k6 run -e BASE_URL=... -e PEAK_RPS=60 -e PERIOD=240s -e DURATION=20m -e RUN_ID=c1 k6/chaos/load.js
import exec from 'k6/execution';
import { sleep } from 'k6';
import { envNumber, envSeconds, vus } from '../lib/config.js';
import { postOrder } from '../lib/checks.js';
import { orderBody } from '../lib/orders.js';
import { sineStages } from '../lib/shapes.js';

const PEAK = envNumber('PEAK_RPS', 100);
const PERIOD_S = envSeconds('PERIOD', '60s');
const DURATION_S = envSeconds('DURATION', __ENV.PERIOD || '60s');
const STEPS = envNumber('STEPS', 30);
const RETRY_FOR_S = envSeconds('RETRY_FOR', '30s');
const RUN_ID = __ENV.RUN_ID || 'chaos';
// k6 stage targets are whole iterations per time unit: at a few RPS, per second would round the
// sine to steps of 0, 1 and 2. Per minute keeps it a sine (the long-job profile runs 0-1.5 RPS).
const PER_MINUTE = PEAK < 20;

export const options = {
  scenarios: {
    sine: Object.assign(
      {
        executor: 'ramping-arrival-rate',
        startRate: 0,
        timeUnit: PER_MINUTE ? '1m' : '1s',
        stages: sineStages(PER_MINUTE ? PEAK * 60 : PEAK, PERIOD_S, DURATION_S, STEPS),
        // Room for an order's retries to finish after the last arrival.
        gracefulStop: `${Math.ceil(RETRY_FOR_S + 15)}s`,
      },
      vus(PEAK),
    ),
  },
  // No thresholds: under chaos 503s and refused connections are expected; the ledger judges.
  thresholds: {},
};

const RETRYABLE = { 0: true, 502: true, 503: true, 504: true };

export default function () {
  const key = `${RUN_ID}-${exec.scenario.iterationInTest}`;
  const body = orderBody();
  const giveUpAt = Date.now() + RETRY_FOR_S * 1000;
  for (let attempt = 1; ; attempt++) {
    const { res, data } = postOrder(body, { headers: { 'Idempotency-Key': key }, timeout: '10s' });
    // the key names its order key-<key> (orderflow/contract.py keyed_order_id)
    const shown = res.status === 200 && !(data && data.order_id === `key-${key}`) ? 'mismatch' : res.status;
    console.log(`${Date.now()} ${shown} ${key} ${attempt}`);
    if (!RETRYABLE[res.status] || Date.now() >= giveUpAt) return;
    const after = Number((res.headers && res.headers['Retry-After']) || 0.5);
    sleep(Math.min(after, 2) * (0.5 + Math.random() / 2));
  }
}
