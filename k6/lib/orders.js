// Order bodies like the seed's clients send them: quantities as decimal strings.
import { API_KEY, BASE_URL } from './config.js';

// A small deterministic PRNG (mulberry32): the same SEED gives the same orders in every VU order.
function rng(seed) {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const random = rng(Number(__ENV.SEED || 1) * 7919 + (typeof __VU === 'number' ? __VU : 0));
const NAMES = ['maksim.konovalov', 'ada', 'grace.hopper', 'linus', 'barbara.liskov', 'ken'];

export function orderBody() {
  return JSON.stringify({
    product_id: String(Math.floor(random() * 101)),
    count: String(1 + Math.floor(random() * 100)),
    username: NAMES[Math.floor(random() * NAMES.length)],
  });
}

export const ORDERS_URL = `${BASE_URL}/orders`;
export const AUTH_HEADERS = API_KEY ? { Authorization: `Bearer ${API_KEY}` } : {};
export const JSON_HEADERS = Object.assign({ 'Content-Type': 'application/json' }, AUTH_HEADERS);
