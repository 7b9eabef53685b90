import markdownIt from 'markdown-it';
import { parse as parseYaml } from 'yaml';
import { projectNamePattern } from '../../workflows/contracts/user-environment.js';

/**
 * A project's `mrmd.md` configuration: every fenced block whose info string is `yaml config` is parsed as
 * YAML and the blocks are deep-merged in document order (mrmd-project `parseConfig`). Publishing is the
 * `publish:` key (the seeds' publish-service grepped for quoted strings instead and published every
 * project with an mrmd.md):
 *
 *   publish:
 *     visibility: public | unlisted | private   # default public
 *     url: "@alice/my-analysis"                 # optional: the project's URL segment instead of its folder name
 *     domain: notes.example.com                 # optional: recorded for custom domains
 *
 * `publish:` absent or `false`: not published. Present (even empty): published with those defaults.
 * A value that cannot be understood is reported in `problems`; an unknown visibility makes the project
 * private (never more visible than its owner meant), a bad `url` or `domain` is ignored.
 */
export type Visibility = 'public' | 'unlisted' | 'private';

export interface PublishSettings {
  visibility: Visibility;
  /** The URL segment replacing the folder name (from `url`), or null. */
  slug: string | null;
  /** A custom domain, lowercased, or null. Recorded only: serving it needs DNS and TLS outside the edge. */
  domain: string | null;
}

export interface ProjectConfig {
  /** The merged configuration, as YAML gave it. */
  values: Record<string, unknown>;
  /** `name:`, when it is a string. */
  name: string | null;
  /** null: not published. */
  publish: PublishSettings | null;
  /** What was ignored and why, for the owner (GET /api/published). */
  problems: string[];
}

const fenceFinder = markdownIt('commonmark');
const visibilities: readonly Visibility[] = ['public', 'unlisted', 'private'];
const domainPattern = /^(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}$/;

type Plain = Record<string, unknown>;
const isPlainObject = (v: unknown): v is Plain => v !== null && typeof v === 'object' && !Array.isArray(v);

/** mrmd-project's deep merge: objects merge key by key, anything else (arrays, null) from the later block wins. */
export function deepMerge(target: Plain, source: Plain): Plain {
  const out: Plain = { ...target };
  for (const [key, value] of Object.entries(source)) {
    const current = out[key];
    out[key] = isPlainObject(value) && isPlainObject(current) ? deepMerge(current, value) : value;
  }
  return out;
}

/** The `yaml config` blocks of mrmd.md, in order (fences found by a CommonMark parser, so indented or nested text is not mistaken for one). */
export function configBlocks(markdown: string): string[] {
  return fenceFinder
    .parse(markdown, {})
    .filter((t) => t.type === 'fence' && /^yaml\s+config\b/i.test(t.info.trim()))
    .map((t) => t.content);
}

export function parseProjectConfig(markdown: string, owner: { username: string }): ProjectConfig {
  const problems: string[] = [];
  let values: Plain = {};
  configBlocks(markdown).forEach((block, i) => {
    let parsed: unknown;
    try {
      // The yaml package bounds alias expansion (maxAliasCount), so a small file cannot blow up in memory.
      parsed = parseYaml(block, { prettyErrors: false });
    } catch (err) {
      problems.push(`yaml config block ${i + 1} is not valid YAML (${(err as Error).message.split('\n')[0]}); it was skipped`);
      return;
    }
    if (parsed === null || parsed === undefined) return;
    if (!isPlainObject(parsed)) {
      problems.push(`yaml config block ${i + 1} is not a mapping of keys to values; it was skipped`);
      return;
    }
    values = deepMerge(values, parsed);
  });
  const name = typeof values.name === 'string' && values.name.trim() ? values.name.trim() : null;
  return { values, name, publish: publishSettings(values, owner, problems), problems };
}

function publishSettings(values: Plain, owner: { username: string }, problems: string[]): PublishSettings | null {
  if (!('publish' in values)) return null;
  const raw = values.publish;
  if (raw === false) return null;
  const block: Plain = isPlainObject(raw) ? raw : {};
  if (!isPlainObject(raw) && raw !== null && raw !== true) problems.push('publish: expected a mapping (visibility, url, domain); published with the defaults');

  let visibility: Visibility = 'public';
  if (block.visibility !== undefined && block.visibility !== null) {
    const v = String(block.visibility).trim().toLowerCase();
    if ((visibilities as readonly string[]).includes(v)) visibility = v as Visibility;
    else {
      visibility = 'private';
      problems.push(`publish.visibility: ${JSON.stringify(block.visibility)} is not public, unlisted or private; the project is treated as private`);
    }
  }

  let slug: string | null = null;
  if (block.url !== undefined && block.url !== null) {
    const parsed = typeof block.url === 'string' ? parseUrlOverride(block.url) : null;
    if (!parsed) problems.push(`publish.url: ${JSON.stringify(block.url)} is not a project URL such as "@${owner.username}/my-analysis" or "my-analysis"; the folder name is used`);
    else if (parsed.user !== null && parsed.user.toLowerCase() !== owner.username.toLowerCase()) {
      problems.push(`publish.url: ${JSON.stringify(block.url)} names another user (@${parsed.user}); a project is published under its owner's name, so the folder name is used`);
    } else slug = parsed.slug;
  }

  let domain: string | null = null;
  if (block.domain !== undefined && block.domain !== null) {
    const d = typeof block.domain === 'string' ? block.domain.trim().toLowerCase().replace(/\.$/, '') : '';
    if (domainPattern.test(d)) domain = d;
    else problems.push(`publish.domain: ${JSON.stringify(block.domain)} is not a domain name such as notes.example.com; it was ignored`);
  }
  return { visibility, slug, domain };
}

/** `@alice/my-analysis`, `/@alice/my-analysis/`, `my-analysis` → the user (if named) and the project's segment. */
export function parseUrlOverride(url: string): { user: string | null; slug: string } | null {
  const m = /^\/?(?:@([a-z0-9._-]{1,32})\/)?([^/]+)\/?$/i.exec(url.trim());
  if (!m || !projectNamePattern.test(m[2]!)) return null;
  return { user: m[1] ?? null, slug: m[2]! };
}
