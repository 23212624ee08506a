/**
 * Exponential backoff with jitter: the delay doubles with each try up to a ceiling, and is spread
 * over its upper half so many files (or nodes) polling one archive do not fall into step.
 */
export function backoffDelay(baseMs: number, tries: number, ceilingMs: number): number {
  // The exponent stops growing long before 2 ** n overflows (Infinity × 0 is NaN).
  const exponential = Math.min(ceilingMs, baseMs * 2 ** Math.min(Math.max(0, tries - 1), 40));
  return Math.round(exponential * (0.5 + Math.random() * 0.5));
}
