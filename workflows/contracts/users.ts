/** Plans a user can be on; each starts with its own limits (activities/user-containers.ts). */
export const Plans = ['free', 'pro', 'team'] as const;
export type Plan = (typeof Plans)[number];

/** Users are identified by lowercase UUIDs everywhere: container names, paths, workflow ids. */
export const userIdPattern = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;
/** A username (`users.username`, lowercase): the `/@<username>/` of published pages, the owner in a dataset's name. */
export const usernamePattern = /^[a-z_][a-z0-9._-]{0,31}$/;
