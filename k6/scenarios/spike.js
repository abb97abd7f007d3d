// A spike: BASE_RPS, then a near-instant jump to PEAK_RPS, hold, back to BASE_RPS while the
// backlog drains.
//
//   k6 run -e BASE_URL=... -e BASE_RPS=10 -e PEAK_RPS=300 -e DURATION=2m k6/scenarios/spike.js
import { envNumber, envSeconds, vus } from '../lib/config.js';
import { postOrder, thresholds } from '../lib/checks.js';
import { spikeStages } from '../lib/shapes.js';

const BASE = envNumber('BASE_RPS', 10);
const PEAK = envNumber('PEAK_RPS', 300);
const DURATION_S = envSeconds('DURATION', '2m');

export const options = {
  scenarios: {
    spike: Object.assign(
      {
        executor: 'ramping-arrival-rate',
        startRate: BASE,
        timeUnit: '1s',
        stages: spikeStages(BASE, PEAK, DURATION_S),
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
