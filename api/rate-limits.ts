import type { RateLimitOptions } from '@fastify/rate-limit';

/**
 * Per-route limits on the endpoints a stranger can hammer (issue 7): sign-in, the magic link and invite
 * links. Routes opt in with `config: { rateLimit: <one of these> }`; the plugin is registered with
 * `global: false` (api/app.ts), so nothing else is limited. Keyed by client address; a 429 says when to retry.
 */
export const signInRateLimit: RateLimitOptions = { max: 20, timeWindow: '1 minute' };
/** Each request sends an email: tighter, and per address as well as per client (see the route). */
export const magicLinkRateLimit: RateLimitOptions = { max: 10, timeWindow: '10 minutes' };
export const joinRateLimit: RateLimitOptions = { max: 30, timeWindow: '1 minute' };
