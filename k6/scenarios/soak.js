// A soak: a steady PEAK_RPS for a long DURATION, to find leaks and slow drifts.
//
//   k6 run -e BASE_URL=... -e PEAK_RPS=30 -e DURATION=30m k6/scenarios/soak.js
import { MODE, envNumber, envSeconds, vus } from '../lib/config.js';
import { postOrder, thresholds } from '../lib/checks.js';

const RATE = envNumber('PEAK_RPS', 30);
const DURATION_S = envSeconds('DURATION', '10m');

export const options = {
  scenarios: {
    soak: Object.assign(
      {
        executor: 'constant-arrival-rate',
        rate: RATE,
        timeUnit: '1s',
        duration: `${Math.round(DURATION_S)}s`,
        gracefulStop: '10s',
      },
      vus(RATE),
    ),
  },
  // over a long run the queued ingest's latency must not drift (direct mode works inline: no bound)
  thresholds: thresholds(
    MODE === 'queued' ? { 'http_req_duration{name:POST /orders,expected_response:true}': ['p(99)<1000', 'p(50)<100'] } : {},
  ),
};

export default function () {
  postOrder();
}
