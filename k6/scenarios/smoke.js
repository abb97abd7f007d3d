// Smoke: one VU walks the API once per iteration: health, an order, its status, a bad order,
// an idempotent retry, metrics (METRICS_URL). Meant for a deploy check:
// `k6 run -e BASE_URL=... -e API_KEY_FILE=... -e METRICS_URL=http://...:9180/metrics smoke.js`.
import http from 'k6/http';
import { check, sleep } from 'k6';
import { BASE_URL, METRICS_URL, envSeconds } from '../lib/config.js';
import { answered, postOrder } from '../lib/checks.js';
import { AUTH_HEADERS, JSON_HEADERS, ORDERS_URL, orderBody } from '../lib/orders.js';

const DURATION_S = envSeconds('DURATION', '10s');

export const options = {
  scenarios: {
    smoke: { executor: 'constant-vus', vus: 1, duration: `${Math.round(DURATION_S)}s`, gracefulStop: '5s' },
  },
  thresholds: {
    checks: ['rate==1'],
    'orders_answered{status:200}': ['count>0'],
    'orders_answered{status:500}': ['count==0'],
    http_req_failed: ['rate==0'],
  },
};

// 4xx answers below are what the smoke test asks for: they are not failed requests.
http.setResponseCallback(http.expectedStatuses(200, 201, 400, 404, 500));

export default function () {
  check(http.get(`${BASE_URL}/healthz`, { tags: { name: 'GET /healthz' } }), { 'healthz 200': (r) => r.status === 200 });
  check(http.get(`${BASE_URL}/readyz`, { tags: { name: 'GET /readyz' } }), { 'readyz 200': (r) => r.status === 200 });

  const { res, data } = postOrder();
  if (res.status === 200 && data && data.order_id) {
    const got = http.get(`${ORDERS_URL}/${data.order_id}`, { headers: AUTH_HEADERS, tags: { name: 'GET /orders/{id}' } });
    check(got, {
      'order status readable': (r) => r.status === 200 && (r.json() || {}).order_id === data.order_id,
    });
  }

  const bad = http.post(ORDERS_URL, JSON.stringify({ product_id: '101', count: '3', username: 'x' }), {
    headers: JSON_HEADERS,
    tags: { name: 'POST /orders (invalid)' },
  });
  answered.add(1, { status: String(bad.status), invalid: 'expected' });
  check(bad, { 'invalid order 400': (r) => r.status === 400 && (r.json() || {}).result === 'invalid' });

  const key = `smoke-${__VU}-${__ITER}-${Date.now()}`;
  const body = orderBody();
  const first = postOrder(body, { headers: { 'Idempotency-Key': key } });
  const again = postOrder(body, { headers: { 'Idempotency-Key': key } });
  check(again.res, {
    'idempotent retry returns the same order id': () =>
      !!first.data && !!again.data && first.data.order_id === again.data.order_id,
  });

  if (METRICS_URL) {
    check(http.get(METRICS_URL, { tags: { name: 'GET /metrics' } }), {
      'metrics exported': (r) => r.status === 200 && r.body.indexOf('orderflow_http_requests_total') >= 0,
    });
  }
  sleep(1);
}
