// Settings every scenario reads from the environment (`k6 run -e NAME=value` or the shell).
//
//   BASE_URL   ingest URL                              default http://127.0.0.1:8080
//   MODE       queued | direct (the ingest's ORDERFLOW_MODE); decides which 5xx are acceptable
//   PEAK_RPS   highest arrival rate                    default per scenario
//   PERIOD     sine period                             default 60s
//   DURATION   whole run                               default per scenario
//   MAX_VUS    ceiling of concurrent requests          default from the peak
//   SEED       seed of the order generator             default 1
//   API_KEY_FILE  a file holding the API key to send (Authorization: Bearer); none: no header
//   METRICS_URL   the ingest's /metrics (its own port): smoke checks it when given

export const BASE_URL = (__ENV.BASE_URL || 'http://127.0.0.1:8080').replace(/\/+$/, '');
// The key is read from a file, not passed as a value: a process's environment is no place for it.
export const API_KEY = __ENV.API_KEY_FILE ? open(__ENV.API_KEY_FILE).trim() : '';
export const METRICS_URL = __ENV.METRICS_URL || '';
export const MODE = (__ENV.MODE || 'queued').toLowerCase();

if (MODE !== 'queued' && MODE !== 'direct') {
  throw new Error(`MODE must be queued or direct, not ${MODE}`);
}

// "90", "90s", "2m", "1h30m", "1.5m" -> seconds.
export function seconds(value) {
  const text = String(value).trim();
  if (/^[0-9.]+$/.test(text)) return Number(text);
  const re = /([0-9.]+)(ms|s|m|h)/g;
  const unit = { ms: 0.001, s: 1, m: 60, h: 3600 };
  let total = 0;
  let matched = '';
  for (let m = re.exec(text); m !== null; m = re.exec(text)) {
    total += Number(m[1]) * unit[m[2]];
    matched += m[0];
  }
  if (matched !== text || !(total > 0)) throw new Error(`not a duration: ${value}`);
  return total;
}

export function envNumber(name, fallback) {
  const raw = __ENV[name];
  if (raw === undefined || raw === '') return fallback;
  const value = Number(raw);
  if (!(value >= 0)) throw new Error(`${name} must be a non-negative number, not ${raw}`);
  return value;
}

export function envSeconds(name, fallback) {
  const raw = __ENV[name];
  return raw === undefined || raw === '' ? seconds(fallback) : seconds(raw);
}

// Arrival-rate executors need VUs for requests in flight: rate x latency. direct mode does the
// work inline (ORDERFLOW_WORK_S, 0.5 s by default), so it needs far more than queued mode.
export function vus(peakRps) {
  const maxVUs = envNumber('MAX_VUS', Math.max(20, Math.ceil(peakRps * (MODE === 'direct' ? 2 : 0.5))));
  return { preAllocatedVUs: Math.max(5, Math.ceil(maxVUs / 4)), maxVUs };
}
