import type pg from 'pg';

/**
 * Records that a user is using their runtime (traffic through the edge to their editor), so the
 * resource monitor never takes a reading or typing user for idle. Writes at most once per `everyMs`
 * per user: the proxy's hot path only compares two numbers.
 */
export function createActivityTracker(pool: pg.Pool, opts: { everyMs?: number } = {}) {
  const everyMs = opts.everyMs ?? 10_000;
  const written = new Map<string, number>();
  return {
    touch(userId: string): void {
      const now = Date.now();
      if ((written.get(userId) ?? 0) + everyMs > now) return;
      written.set(userId, now);
      if (written.size > 100_000) written.clear();
      pool
        .query(`UPDATE runtimes SET last_activity_at = now() WHERE user_id = $1 AND kind = 'user' AND state NOT IN ('stopped', 'failed')`, [userId])
        .catch(() => written.delete(userId));
    },
  };
}

export type ActivityTracker = ReturnType<typeof createActivityTracker>;
