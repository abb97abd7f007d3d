// The seed's load: a sine wave of arrivals, 0 -> PEAK_RPS -> 0 every PERIOD, for DURATION.
//
//   k6 run -e BASE_URL=http://127.0.0.1:8080 -e PEAK_RPS=100 -e PERIOD=60s -e DURATION=2m k6/scenarios/sine.js
//   MODE=direct: 500 server-kaput above the ingest's capacity is expected, not a failure.
import { envNumber, envSeconds, vus } from '../lib/config.js';
import { postOrder, thresholds } from '../lib/checks.js';
import { sineStages } from '../lib/shapes.js';

const PEAK = envNumber('PEAK_RPS', 100);
const PERIOD_S = envSeconds('PERIOD', '60s');
const DURATION_S = envSeconds('DURATION', __ENV.PERIOD || '60s');
const STEPS = envNumber('STEPS', 30);

export const options = {
  scenarios: {
    sine: Object.assign(
      {
        executor: 'ramping-arrival-rate',
        startRate: 0,
        timeUnit: '1s',
        stages: sineStages(PEAK, PERIOD_S, DURATION_S, STEPS),
        gracefulStop: '10s',
      },
      vus(PEAK),
    ),
  },
  thresholds: thresholds(),
};

export default function () {
  postOrder();
}
