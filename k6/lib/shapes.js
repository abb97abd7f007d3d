// Arrival-rate shapes as ramping-arrival-rate stages.

// A raised-cosine sine: 0 -> peak at period/2 -> 0 at period, repeated for the whole duration.
// k6 interpolates linearly between stage targets, so `steps` stages per period approximate it.
export function sineStages(peakRps, periodS, durationS, steps) {
  const stages = [];
  const stepS = periodS / steps;
  let t = 0;
  while (t < durationS - 1e-9) {
    const dur = Math.min(stepS, durationS - t);
    t += dur;
    const phase = (2 * Math.PI * t) / periodS;
    stages.push({ duration: `${Math.round(dur * 1000)}ms`, target: Math.round((peakRps * (1 - Math.cos(phase))) / 2) });
  }
  return stages;
}

export function spikeStages(baseRps, peakRps, durationS) {
  // a quiet start, a near-instant jump to the peak, hold, a sharp drop, and quiet again to watch
  // the backlog drain.
  const warm = Math.max(1, durationS * 0.2);
  const rise = Math.min(5, durationS * 0.05);
  const hold = Math.max(1, durationS * 0.3);
  const fall = rise;
  const rest = Math.max(1, durationS - warm - rise - hold - fall);
  const ms = (s) => `${Math.round(s * 1000)}ms`;
  return [
    { duration: ms(warm), target: baseRps },
    { duration: ms(rise), target: peakRps },
    { duration: ms(hold), target: peakRps },
    { duration: ms(fall), target: baseRps },
    { duration: ms(rest), target: baseRps },
  ];
}
