// bench/e2e's load: POST /orders at a constant arrival rate, nothing else, so that k6's
// http_req_duration is the latency of POST /orders alone. Run by `python -m bench.e2e`.
//
//   BASE_URL  ingest URL          RATE      arrivals per second
//   DURATION  e.g. 30s            PRE_VUS / MAX_VUS  VU pool (requests in flight = rate x latency)
import http from 'k6/http';
import { Counter } from 'k6/metrics';
import { JSON_HEADERS, ORDERS_URL, orderBody } from '../../k6/lib/orders.js';

const RATE = Number(__ENV.RATE || 1000);

// 200 = stored durably (PubAck); anything else, including no answer (status 0), is not accepted.
const accepted = new Counter('orders_accepted');
const refused = new Counter('orders_refused'); // an HTTP answer other than 200 (503 = told to retry)
const noAnswer = new Counter('orders_no_answer'); // timeout, connection reset

export const options = {
  discardResponseBodies: true,
  scenarios: {
    load: {
      executor: 'constant-arrival-rate',
      rate: RATE,
      timeUnit: '1s',
      duration: __ENV.DURATION || '30s',
      preAllocatedVUs: Number(__ENV.PRE_VUS || 50),
      maxVUs: Number(__ENV.MAX_VUS || 500),
      gracefulStop: '10s',
    },
  },
  summaryTrendStats: ['avg', 'p(50)', 'p(90)', 'p(99)', 'max'],
};

export default function () {
  const res = http.post(ORDERS_URL, orderBody(), { headers: JSON_HEADERS, timeout: '10s' });
  if (res.status === 200) accepted.add(1);
  else if (res.status === 0) noAnswer.add(1);
  else refused.add(1);
}
